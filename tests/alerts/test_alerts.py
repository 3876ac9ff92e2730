"""Alert notifications: the bodies each channel kind gets, delivery to real HTTP servers on
loopback and through Django's mail backend, retries, the per-subject rate limit on the real
Redis, the control plane raising them, and the admin's test button."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from django.core import mail
from django.test import Client

from alerts import formats, services
from alerts.delivery import DeliveryError, DeliveryRefused, deliver
from alerts.events import AlertEvent, heal_outcome, node_state
from alerts.models import AlertChannel
from alerts.tasks import send_alert, send_held
from clawdbot_site import redis_keys
from nodes import tasks
from nodes.models import Node
from nodes.services import ProbeOutcome

EVENT = node_state("gpu1", "READY", "DOWN", "connection refused")


class Receiver:
    """An HTTP server on loopback that records bodies and answers from a script."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.bodies: list[Any] = []
        self.answers = answers
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status, body = receiver.answers.pop(0) if receiver.answers else (200, b"{}")
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*answers: tuple[int, bytes]) -> Receiver:
        started.append(Receiver(list(answers)))
        return started[-1]

    yield start
    for r in started:
        r.server.shutdown()
        r.server.server_close()


# --- what each kind of channel is sent (pure) ---


def test_formats_say_what_happened_in_each_channel_s_shape() -> None:
    details = formats.webhook(EVENT, 2)["details"]
    assert details == {"node": "gpu1", "before": "READY", "after": "DOWN"}
    assert formats.webhook(EVENT)["severity"] == "critical"
    slack = formats.slack(EVENT, 2)["text"]
    assert slack.startswith("🚨 *Node gpu1 is DOWN (was READY)*") and "2 similar alerts" in slack
    html = formats.slack(node_state("gpu1", "READY", "DOWN", "got <html> & <b>"))["text"]
    assert "got &lt;html&gt; &amp; &lt;b&gt;" in html
    wecom = formats.wecom(EVENT)
    assert wecom["msgtype"] == "markdown" and "Node gpu1 is DOWN" in wecom["markdown"]["content"]
    long = AlertEvent("heal", "heal:gpu1", "critical", "Self-heal failed", "日志" * 3000)
    assert len(formats.wecom(long)["markdown"]["content"].encode()) <= 4096
    subject, body = formats.email(heal_outcome("gpu1", True, "exit status 0"))
    assert subject == "[Clawdbot info] Self-heal of node gpu1 recovered it"
    assert body.startswith("exit status 0")


# --- delivery ---


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["webhook", "slack", "wecom"])
def test_http_channels_get_their_body(kind: str, receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    channel = AlertChannel.objects.create(name=kind, kind=kind, target=hook.url)
    deliver(channel, EVENT)
    (body,) = hook.bodies
    expected = {"webhook": formats.webhook, "slack": formats.slack, "wecom": formats.wecom}
    assert body == json.loads(json.dumps(expected[kind](EVENT)))


@pytest.mark.slow
@pytest.mark.django_db
def test_failures_are_retried_and_refusals_are_not(receiver: Callable[..., Receiver]) -> None:
    hook = receiver(
        (500, b"oops"),
        (404, b"no_service"),
        (429, b"slow down"),
        (200, b'{"errcode": 93000, "errmsg": "invalid webhook url"}'),
    )
    webhook = AlertChannel.objects.create(name="w", kind="webhook", target=hook.url)
    with pytest.raises(DeliveryError, match="HTTP 500"):
        deliver(webhook, EVENT)
    with pytest.raises(DeliveryRefused, match="HTTP 404"):
        deliver(webhook, EVENT)
    with pytest.raises(DeliveryError, match="HTTP 429"):
        deliver(webhook, EVENT)
    robot = AlertChannel.objects.create(name="r", kind="wecom", target=hook.url)
    with pytest.raises(DeliveryRefused, match="WeCom refused"):
        deliver(robot, EVENT)
    gone = AlertChannel.objects.create(name="g", kind="slack", target="http://127.0.0.1:9/x")
    with pytest.raises(DeliveryError):
        deliver(gone, EVENT)


@pytest.mark.django_db
def test_email_goes_through_django_s_mail(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    channel = AlertChannel.objects.create(name="ops", kind="email", target="a@x.org, b@x.org")
    deliver(channel, EVENT, suppressed=3)
    (message,) = mail.outbox
    assert message.to == ["a@x.org", "b@x.org"]
    assert message.subject == "[Clawdbot critical] Node gpu1 is DOWN (was READY)"
    assert "3 similar alerts held back" in message.body


@pytest.mark.slow
@pytest.mark.django_db
def test_a_failed_delivery_is_retried_until_it_goes_through(
    receiver: Callable[..., Receiver], redis_client: redis.Redis
) -> None:
    hook = receiver((503, b"busy"), (502, b"bad gateway"))
    channel = AlertChannel.objects.create(name="w", kind="webhook", target=hook.url)
    assert send_alert.autoretry_for == (DeliveryError,) and send_alert.max_retries == 6
    send_alert.apply(args=[channel.pk, EVENT.to_dict()])  # eager: retries run at once
    assert len(hook.bodies) == 3 and hook.bodies[-1]["title"] == EVENT.title


# --- the rate limit, on the real Redis ---


@pytest.mark.slow
@pytest.mark.django_db
def test_a_flapping_subject_is_held_back_and_counted(
    redis_client: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    AlertChannel.objects.create(name="w", kind="webhook", target="http://127.0.0.1:9/x")
    AlertChannel.objects.create(name="off", kind="webhook", target="http://x.org/", enabled=False)
    AlertChannel.objects.create(
        name="heals", kind="webhook", target="http://127.0.0.1:9/y", events=["heal"]
    )
    down = node_state("gpu1", "DEGRADED", "DOWN", "connection refused")
    with django_capture_on_commit_callbacks() as queued:
        sent = [services.notify(e) for e in (EVENT, EVENT, EVENT, EVENT, down)]
        other = services.notify(node_state("gpu2", "READY", "DEGRADED", "timeout"))
    assert sent == [1, 0, 0, 0, 0] and other == 1
    assert len(queued) == 3, "two sends now, and one for the end of gpu1's interval"
    channel = AlertChannel.objects.get(name="w")
    latest, count = services.take_held(channel.pk, "node:gpu1")
    assert latest is not None and latest["title"] == down.title and count == 4
    assert services.take_held(channel.pk, "node:gpu1") == (None, 0)


@pytest.mark.slow
@pytest.mark.django_db
def test_what_was_held_is_sent_when_the_interval_ends(
    receiver: Callable[..., Receiver],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A node that goes DEGRADED and then DOWN within the interval ends with DOWN in the
    channel: the last word is never one of those held back."""
    hook = receiver()
    channel = AlertChannel.objects.create(name="w", kind="webhook", target=hook.url)
    monkeypatch.setattr(services, "enqueue", lambda pk, event, held: send_alert(pk, event, held))
    with django_capture_on_commit_callbacks(execute=True):
        services.notify(node_state("gpu1", "READY", "DEGRADED", "timeout"))
    with django_capture_on_commit_callbacks(execute=False) as scheduled:
        services.notify(node_state("gpu1", "DEGRADED", "DOWN", "refused"))
        services.notify(node_state("gpu1", "DEGRADED", "DOWN", "refused"))
    assert len(scheduled) == 1  # one send at the end of the interval, not one per alert
    send_held(channel.pk, "node:gpu1")  # what that scheduled send runs
    assert [b["title"] for b in hook.bodies] == [
        "Node gpu1 is DEGRADED (was READY)",
        "Node gpu1 is DOWN (was DEGRADED)",
    ]
    assert hook.bodies[-1]["suppressed"] == 1
    assert redis_client.exists(redis_keys.alert_sent(channel.pk, "node:gpu1"))


@pytest.mark.slow
@pytest.mark.django_db
def test_an_unreachable_queue_never_breaks_the_caller(
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from kombu.exceptions import OperationalError

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(send_alert, "apply_async", down)
    AlertChannel.objects.create(name="w", kind="webhook", target="http://alertmanager:9093/x")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notify(EVENT) == 1  # queued, and the failure only logged


# --- raised by the control plane ---


@pytest.mark.slow
@pytest.mark.django_db
def test_a_node_changing_state_raises_an_alert(
    make_node: Callable[..., Node], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised: list[AlertEvent] = []

    def notify(event: AlertEvent) -> int:
        raised.append(event)
        return 1

    monkeypatch.setattr(services, "notify", notify)
    node = make_node("gpu1", state="DOWN", last_probe_error="connection refused")
    tasks.follow_up(ProbeOutcome(node=node, previous_state="READY", held_for_warmup=False))
    tasks.follow_up(ProbeOutcome(node=node, previous_state="DOWN", held_for_warmup=False))
    (event,) = raised
    assert event.title == "Node gpu1 is DOWN (was READY)" and event.text == "connection refused"


@pytest.mark.slow
def test_the_admin_queues_a_test_alert(admin_client: Client, redis_client: redis.Redis) -> None:
    channel = AlertChannel.objects.create(name="w", kind="webhook", target="http://127.0.0.1:9/")
    response = admin_client.post(
        "/admin/alerts/alertchannel/",
        {"action": "send_test", "_selected_action": [channel.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Test alert queued for 1 channel(s)." in response.content.decode()


@pytest.mark.django_db
def test_a_channel_checks_its_target_and_events() -> None:
    from django.core.exceptions import ValidationError

    for kind, target, events in (
        ("email", "not-an-address", []),
        ("slack", "ftp://x.org", []),
        ("webhook", "https://x.org/h", ["node_state", "weather"]),
    ):
        with pytest.raises(ValidationError):
            AlertChannel(name="c", kind=kind, target=target, events=events).full_clean()
    AlertChannel(name="c", kind="wecom", target="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
                 events=["heal"]).full_clean()  # fmt: skip
    AlertChannel(name="d", kind="webhook", target="http://alertmanager:9093/hook").full_clean()
    emptied = AlertChannel(name="e", kind="webhook", target="http://h/x", events=None)
    emptied.full_clean()
    assert emptied.events == []
