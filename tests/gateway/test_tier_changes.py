"""A recorded tier change: its row, shown read-only in the admin, and the `tier` alert it sends
to the channels that want it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from django.test import Client

from alerts import services as alert_services
from alerts.events import tier_change
from alerts.models import AlertChannel
from alerts.tasks import send_alert
from gateway.models import TierChange
from gateway.services import tier_change_record

pytestmark = pytest.mark.slow  # the database, Redis and a loopback receiver


@pytest.fixture
def hook() -> Iterator[tuple[str, list[Any]]]:
    """A webhook receiver on loopback: its URL and the bodies it got."""
    bodies: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_the_alert_says_where_the_tier_went_and_why() -> None:
    up = tier_change(0, 2, 0.2, 40)
    assert (up.kind, up.subject, up.severity) == ("tier", "tier", "critical")
    assert up.title == "Degradation tier 2 (downgrade), was 0 (normal)"
    assert up.text == "Cluster error rate 20.0% over 40 requests in the window."
    assert tier_change(0, 1, 0.06, 40).severity == "warning"
    assert tier_change(3, 0, 0.0, 400).severity == "info"


@pytest.mark.django_db
def test_a_recorded_change_is_a_row_and_an_alert_to_the_channels_that_want_it(
    hook: tuple[str, list[Any]],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    url, bodies = hook
    AlertChannel.objects.create(name="tiers", kind="webhook", target=url, events=["tier"])
    AlertChannel.objects.create(name="heals", kind="webhook", target=url, events=["heal"])
    monkeypatch.setattr(
        alert_services, "enqueue", lambda pk, event, held: send_alert(pk, event, held)
    )
    with django_capture_on_commit_callbacks(execute=True):
        row = tier_change_record(
            before=0, after=2, error_rate=0.2, requests=40, failures=8, at=1_800_000_000.0
        )
    assert TierChange.objects.get() == row
    assert (row.from_tier, row.to_tier, row.requests, row.failures) == (0, 2, 40, 8)
    assert row.at.timestamp() == 1_800_000_000.0
    (body,) = bodies
    assert body["kind"] == "tier" and body["details"]["after"] == 2


@pytest.mark.django_db
def test_tier_changes_are_listed_read_only_in_the_admin(admin_client: Client) -> None:
    tier_change_record(before=0, after=1, error_rate=0.1, requests=50, failures=5, at=1e9)
    page = admin_client.get("/admin/gateway/tierchange/")
    assert page.status_code == 200
    assert "10.0%" in page.content.decode() and "1 (cache)" in page.content.decode()
    assert admin_client.get("/admin/gateway/tierchange/add/").status_code == 403
