"""What a refused request is told, from the admission verdict alone."""

from __future__ import annotations

from gateway import refusals
from gateway.admission import Verdict
from tests.gateway.views import KEY


def verdict(status: str, retry_after_ms: int = 0) -> Verdict:
    return Verdict(status, "gpu1", retry_after_ms, 5, 400)


def test_a_rate_limited_request_gets_the_headers_the_openai_sdk_reads() -> None:
    error = refusals.refusal(verdict("rate_requests", 1500), KEY, "m")
    assert error is not None and error.status == 429 and error.type == "requests"
    assert error.headers == {
        "retry-after": "2",
        "retry-after-ms": "1500",
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }


def test_a_wait_past_two_minutes_tells_the_client_not_to_retry() -> None:
    error = refusals.rate_limited(KEY, verdict("rate_tokens", 300_000))
    assert error.headers["retry-after"] == "120"
    assert error.headers["x-should-retry"] == "false"
    assert error.headers["x-ratelimit-limit-tokens"] == "1000"


def test_a_request_larger_than_the_whole_budget_is_never_worth_retrying() -> None:
    error = refusals.rate_limited(KEY, verdict("rate_tokens", refusals.TOO_LARGE))
    assert error.status == 429 and error.headers == {"x-should-retry": "false"}
    assert "1000 tokens per minute" in error.message


def test_an_ejected_or_full_cluster_is_a_503_with_retry_after() -> None:
    ejected = refusals.refusal(verdict("ejected"), KEY, "qwen")
    full = refusals.refusal(verdict("full"), KEY, "qwen")
    assert ejected is not None and ejected.status == 503
    assert ejected.headers == {"retry-after": "5"} and "`qwen`" in ejected.message
    assert full is not None and full.status == 503 and full.headers == {"retry-after": "1"}


def test_admitted_verdicts_are_not_refusals() -> None:
    assert refusals.refusal(verdict("ok"), KEY, "m") is None
    assert refusals.refusal(verdict("queued"), KEY, "m") is None


def test_rate_headers_show_what_remains_and_never_a_negative() -> None:
    headers = dict(refusals.rate_headers(KEY, Verdict("ok", "gpu1", 0, -1, 250)))
    assert headers == {
        b"x-ratelimit-limit-requests": b"60",
        b"x-ratelimit-remaining-requests": b"0",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"250",
    }
