"""What a load run measured, as plain data: each request's outcome, the run's summary
(counts by status, error rate, throughput, latency and time-to-first-token percentiles) and
the thresholds it is held to. No I/O here; `loadgen.runner` produces the outcomes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Distinct error messages kept per status bucket, the first ones seen: for a report a
# person can read.
SAMPLES_PER_BUCKET = 3

# Outcome buckets that are not HTTP statuses: the request never got a complete answer.
CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
NETWORK_ERROR = "network_error"
PROTOCOL_ERROR = "protocol_error"
STREAM_ERROR = "stream_error"
BAD_RESPONSE = "bad_response"


@dataclass(frozen=True)
class Outcome:
    """One request: its bucket (the HTTP status as text, e.g. "200" or "503", or one of the
    names above), how long it took, when its first content token came (streams only)."""

    status: str
    latency_s: float
    ttft_s: float | None = None
    completion_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return is_ok(self.status)


def is_ok(status: str) -> bool:
    return status.isdigit() and status.startswith("2")


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    max: float


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it, so a
    reported p99 is always a latency some request had."""
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(values: Iterable[float]) -> Percentiles | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return Percentiles(
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


@dataclass(frozen=True)
class Summary:
    """A finished run. Latency and TTFT are over successful requests only: a refusal answered
    in a millisecond would otherwise make the percentiles look better than service is."""

    model: str
    stream: bool
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    statuses: dict[str, int]
    latency: Percentiles | None
    ttft: Percentiles | None
    completion_tokens: int | None
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    @property
    def errors_by_status(self) -> dict[str, int]:
        return {s: n for s, n in self.statuses.items() if not is_ok(s)}

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float | None:
        if self.completion_tokens is None or self.duration_s <= 0:
            return None
        return self.completion_tokens / self.duration_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stream": self.stream,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": dict(self.statuses),
            "errors_by_status": self.errors_by_status,
            "error_rate": self.error_rate,
            "requests_per_s": self.requests_per_s,
            "latency_s": asdict(self.latency) if self.latency else None,
            "ttft_s": asdict(self.ttft) if self.ttft else None,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self.tokens_per_s,
            "samples": {s: list(m) for s, m in self.samples.items()},
        }


def summarize(
    outcomes: Sequence[Outcome], *, model: str, stream: bool, concurrency: int, duration_s: float
) -> Summary:
    statuses = Counter(o.status for o in outcomes)
    samples: dict[str, list[str]] = {}
    for o in outcomes:
        if o.error is None:
            continue
        kept = samples.setdefault(o.status, [])
        if len(kept) < SAMPLES_PER_BUCKET and o.error not in kept:
            kept.append(o.error)
    succeeded = [o for o in outcomes if o.ok]
    tokens = [o.completion_tokens for o in succeeded if o.completion_tokens is not None]
    return Summary(
        model=model,
        stream=stream,
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(outcomes),
        ok=len(succeeded),
        # Most frequent first, so a report leads with what mattered.
        statuses=dict(sorted(statuses.items(), key=lambda item: (-item[1], item[0]))),
        latency=percentiles(o.latency_s for o in succeeded),
        ttft=percentiles(o.ttft_s for o in succeeded if o.ttft_s is not None),
        completion_tokens=sum(tokens) if tokens else None,
        samples=samples,
    )


@dataclass(frozen=True)
class Thresholds:
    """Limits a run must stay within; None leaves one unchecked. Times in seconds."""

    max_error_rate: float | None = None
    max_p95_s: float | None = None
    max_p99_s: float | None = None
    max_ttft_p95_s: float | None = None


@dataclass(frozen=True)
class Check:
    """One threshold held against a run: `name` is the Thresholds field, `reason` a sentence
    for the report."""

    name: str
    limit: float
    actual: float | None
    passed: bool
    reason: str


def evaluate(summary: Summary, thresholds: Thresholds) -> list[Check]:
    """Every threshold set, passed or not; a run in which nothing finished fails them all,
    since it measured nothing."""
    checks = []
    if thresholds.max_error_rate is not None:
        checks.append(_error_rate_check(summary, thresholds.max_error_rate))
    for name, label, limit, values in (
        ("max_p95_s", "latency p95", thresholds.max_p95_s, summary.latency),
        ("max_p99_s", "latency p99", thresholds.max_p99_s, summary.latency),
        ("max_ttft_p95_s", "time to first token p95", thresholds.max_ttft_p95_s, summary.ttft),
    ):
        if limit is None:
            continue
        if values is None:
            why = "not streamed" if name == "max_ttft_p95_s" and not summary.stream else None
            reason = f"{label}: not measured ({why or 'no request succeeded'})"
            checks.append(Check(name, limit, None, False, reason))
            continue
        actual = values.p99 if name == "max_p99_s" else values.p95
        passed = actual <= limit
        sign = "<=" if passed else ">"
        reason = f"{label} {actual:.3f} s {sign} {limit:g} s"
        checks.append(Check(name, limit, actual, passed, reason))
    return checks


def _error_rate_check(summary: Summary, limit: float) -> Check:
    if summary.requests == 0:
        return Check("max_error_rate", limit, None, False, "error rate: no request finished")
    rate = summary.error_rate
    passed = rate <= limit
    reason = f"error rate {rate:.2%} {'<=' if passed else '>'} {limit:.2%}"
    if summary.errors:
        counts = ", ".join(f"{s}: {n}" for s, n in summary.errors_by_status.items())
        reason += f" ({counts})"
    return Check("max_error_rate", limit, rate, passed, reason)


def violations(summary: Summary, thresholds: Thresholds) -> list[Check]:
    """The thresholds the run broke; empty when it held to all of them."""
    return [check for check in evaluate(summary, thresholds) if not check.passed]
