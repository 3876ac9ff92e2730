"""Latency histograms with fixed buckets, and the percentiles read off them (pure).

The rollups keep counts per bucket, not raw values, so any window's distribution is a sum of
rows and its percentiles come from the summed counts. The buckets grow roughly by half each
step (10 ms … 120 s), so a percentile interpolated inside its bucket is off by at most half a
bucket's width; the last bucket ends at the largest value seen, not at infinity."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

# Upper bounds in milliseconds, exclusive: bucket i holds BOUNDS[i-1] <= v < BOUNDS[i], the
# first bucket 0 <= v < 10 and the last v >= 120 s.
BOUNDS: tuple[float, ...] = (
    10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000,
    1500, 2000, 3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 60000, 120000,
)  # fmt: skip
BUCKETS = len(BOUNDS) + 1
LATENCY_FIELDS = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT_FIELDS = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
QUANTILES = (0.5, 0.95, 0.99)


def bucket_range(index: int) -> tuple[float, float | None]:
    """[low, high) of bucket `index` in ms; high is None for the last, open bucket."""
    low = 0.0 if index == 0 else float(BOUNDS[index - 1])
    high = float(BOUNDS[index]) if index < len(BOUNDS) else None
    return low, high


def bucket_of(value_ms: float) -> int:
    """The bucket a value falls in (what the rollup's SQL computes, for the tests)."""
    for i, bound in enumerate(BOUNDS):
        if value_ms < bound:
            return i
    return len(BOUNDS)


def label(index: int) -> str:
    low, high = bucket_range(index)
    if high is None:
        return f"≥{_short(low)}"
    return f"<{_short(high)}"


def _short(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def percentile(counts: Sequence[int], q: float, max_value: float | None = None) -> float | None:
    """The q-quantile (0 < q <= 1) of values counted in BOUNDS buckets, interpolated linearly
    inside its bucket; None when nothing was counted. `max_value`, the largest value seen,
    closes the last bucket (and caps every answer); without it the last bucket is read as
    twice its lower bound wide."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            low, high = bucket_range(i)
            if high is None:
                high = max(max_value or 0.0, low) if max_value is not None else low * 2
            value = low + (high - low) * ((rank - seen) / count)
            return min(value, max_value) if max_value is not None else value
        seen += count
    return max_value  # unreachable: rank <= total


def add(into: list[int], counts: Iterable[int]) -> list[int]:
    for i, count in enumerate(counts):
        into[i] += count
    return into


@dataclass(frozen=True)
class Stats:
    """A group of requests summed from rollup rows (or raw rows aggregated the same way)."""

    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = (0,) * BUCKETS  # successful requests only
    ttft: tuple[int, ...] = (0,) * BUCKETS
    latency_max: float | None = None
    ttft_max: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    gen_tokens: int = 0  # completion tokens of successful requests that reported any
    gen_ms: float = 0.0  # their generation time: latency after the first token

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed one request sees: completion tokens over time spent generating."""
        return self.gen_tokens / (self.gen_ms / 1000) if self.gen_ms > 0 else None

    def latency_quantiles(self) -> dict[str, float | None]:
        return {_name(q): percentile(self.latency, q, self.latency_max) for q in QUANTILES}

    def ttft_quantiles(self) -> dict[str, float | None]:
        return {_name(q): percentile(self.ttft, q, self.ttft_max) for q in QUANTILES}


def _name(q: float) -> str:
    return f"p{round(q * 100)}"


def stats_from_row(row: Mapping[str, object]) -> Stats:
    """A Stats from one aggregated row: a dict of the rollup's column names, each prefixed
    `s_` (what dashboard.analytics selects)."""

    def number(name: str) -> int:
        return _int(row.get(f"s_{name}"))

    return Stats(
        requests=number("requests"),
        errors=number("errors"),
        latency=tuple(number(f) for f in LATENCY_FIELDS),
        ttft=tuple(number(f) for f in TTFT_FIELDS),
        latency_max=_float_or_none(row.get("s_latency_max")),
        ttft_max=_float_or_none(row.get("s_ttft_max")),
        completion_tokens=number("completion_tokens"),
        prompt_tokens=number("prompt_tokens"),
        gen_tokens=number("gen_tokens"),
        gen_ms=float(_float_or_none(row.get("s_gen_ms")) or 0.0),
    )


def merge(stats: Iterable[Stats]) -> Stats:
    requests = errors = completion = prompt = gen_tokens = 0
    gen_ms = 0.0
    latency, ttft = [0] * BUCKETS, [0] * BUCKETS
    latency_max: float | None = None
    ttft_max: float | None = None
    for s in stats:
        requests += s.requests
        errors += s.errors
        completion += s.completion_tokens
        prompt += s.prompt_tokens
        gen_tokens += s.gen_tokens
        gen_ms += s.gen_ms
        add(latency, s.latency)
        add(ttft, s.ttft)
        latency_max = _max(latency_max, s.latency_max)
        ttft_max = _max(ttft_max, s.ttft_max)
    return Stats(
        requests=requests,
        errors=errors,
        latency=tuple(latency),
        ttft=tuple(ttft),
        latency_max=latency_max,
        ttft_max=ttft_max,
        completion_tokens=completion,
        prompt_tokens=prompt,
        gen_tokens=gen_tokens,
        gen_ms=gen_ms,
    )


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _int(value: object) -> int:
    # PostgreSQL sums bigint columns as numeric: Decimal, from a raw cursor.
    return int(value) if isinstance(value, int | float | Decimal) else 0


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float | Decimal) else None
