"""Whose fault a failed attempt is, decided without a node or a network."""

from __future__ import annotations

import pytest

from gateway import node_faults
from gateway.errors import GatewayError
from wire.http_client import UpstreamConnectError, UpstreamDisconnected, UpstreamTimeout

ERROR = GatewayError(400, "bad", "invalid_request_error")


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_client_error_is_the_client_s_to_read(status: int) -> None:
    assert node_faults.for_status(status, ERROR) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 401, 403, 408])
def test_server_errors_and_bad_node_credentials_count_against_the_node(status: int) -> None:
    retry = node_faults.for_status(status, ERROR)
    assert retry is not None and retry.outcome == "fail" and retry.error is ERROR


@pytest.mark.parametrize("status", [404, 429])
def test_a_missing_model_or_a_busy_node_is_retried_without_a_step_to_ejection(
    status: int,
) -> None:
    retry = node_faults.for_status(status, ERROR)
    assert retry is not None and retry.outcome == "neutral"


def test_transport_failures_say_what_happened_with_the_right_status() -> None:
    timeout = node_faults.transport_error("gpu1", UpstreamTimeout("read"))
    refused = node_faults.transport_error("gpu1", UpstreamConnectError("refused"))
    dropped = node_faults.transport_error("gpu1", UpstreamDisconnected("closed"))
    assert (timeout.status, timeout.code) == (504, "upstream_timeout")
    assert (refused.status, refused.code) == (503, "service_unavailable")
    assert refused.headers == {"retry-after": "1"}
    assert (dropped.status, dropped.code) == (502, "upstream_error")
    assert "gpu1" in timeout.message and "gpu1" in refused.message and "gpu1" in dropped.message


def test_every_transport_failure_is_retried_as_the_node_s_fault() -> None:
    retry = node_faults.for_transport("gpu1", UpstreamTimeout("read"))
    assert retry.outcome == "fail" and retry.error.status == 504
    assert all(
        issubclass(e, node_faults.RETRYABLE_EXCEPTIONS)
        for e in (UpstreamTimeout, UpstreamConnectError, UpstreamDisconnected)
    )
