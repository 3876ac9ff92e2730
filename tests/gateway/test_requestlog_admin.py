"""The read-only request-log pages of the Django admin."""

from __future__ import annotations

from datetime import UTC, datetime

from django.test import Client

from gateway.models import RequestLog


def _row(request_id: str, status: int) -> RequestLog:
    return RequestLog.objects.create(
        request_id=request_id,
        created_at=datetime.now(tz=UTC),
        endpoint="chat",
        status=status,
        latency_ms=1.0,
    )


def test_status_classes_filter_without_listing_every_status(admin_client: Client) -> None:
    for request_id, status in (("req-ok", 200), ("req-bad", 400), ("req-rate", 429),
                               ("req-gone", 499), ("req-fail", 503)):  # fmt: skip
        _row(request_id, status)

    def listed(status_class: str) -> set[str]:
        page = admin_client.get(f"/admin/gateway/requestlog/?status_class={status_class}")
        assert page.status_code == 200
        html = page.content.decode()
        return {r for r in ("req-ok", "req-bad", "req-rate", "req-gone", "req-fail") if r in html}

    assert listed("ok") == {"req-ok"}
    assert listed("client") == {"req-bad"}
    assert listed("429") == {"req-rate"}
    assert listed("499") == {"req-gone"}
    assert listed("server") == {"req-fail"}


def test_rows_cannot_be_added_or_edited(admin_client: Client) -> None:
    row = _row("req-x", 200)
    assert admin_client.get("/admin/gateway/requestlog/add/").status_code == 403
    page = admin_client.get(f"/admin/gateway/requestlog/{row.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()
    assert admin_client.post(f"/admin/gateway/requestlog/{row.pk}/change/", {}).status_code == 403
