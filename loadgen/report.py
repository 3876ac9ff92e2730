"""A run as text for a person: the live progress (a bar for a terminal, a line for a log)
and the summary table with the thresholds' verdicts. Pure formatting."""

from __future__ import annotations

from loadgen.runner import Progress
from loadgen.stats import Check, Percentiles, Summary

BAR_WIDTH = 30
LABEL_WIDTH = 12


def progress_bar(progress: Progress) -> str:
    """One terminal line, redrawn in place: done/total or elapsed/duration, rate, errors."""
    if progress.total is not None:
        fraction = progress.done / progress.total
        where = f"{progress.done}/{progress.total}"
    else:
        assert progress.duration_s is not None
        fraction = progress.elapsed_s / progress.duration_s
        where = f"{progress.elapsed_s:.0f}s/{progress.duration_s:g}s {progress.done} done"
    filled = round(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"[{bar}] {where}  {progress.requests_per_s:.1f} req/s  "
        f"{_errors(progress.errors)}  {progress.elapsed_s:.1f}s"
    )


def progress_line(progress: Progress) -> str:
    """A line for a log or a pipe, printed every few seconds."""
    if progress.total is not None:
        where = f"{progress.done}/{progress.total} done"
    else:
        assert progress.duration_s is not None
        where = f"{progress.done} done, {progress.elapsed_s:.0f}s of {progress.duration_s:g}s"
    return (
        f"loadtest: {where}, {progress.requests_per_s:.1f} req/s, {_errors(progress.errors)}, "
        f"{progress.in_flight} in flight"
    )


def _errors(count: int) -> str:
    return f"{count} error{'s' * (count != 1)}"


def summary_table(summary: Summary, checks: list[Check], *, url: str = "") -> str:
    mode = "streamed" if summary.stream else "not streamed"
    where = f" at {url}" if url else ""
    rows = [
        (
            "loadtest",
            f"{summary.model}{where}, {mode}, {summary.concurrency} clients, "
            f"{summary.duration_s:.2f} s",
        ),
        ("requests", str(summary.requests)),
        ("ok", str(summary.ok)),
        ("errors", _error_counts(summary)),
        ("error rate", f"{summary.error_rate:.2%}"),
        ("throughput", _throughput(summary)),
        ("latency", _percentiles(summary.latency)),
    ]
    if summary.stream:
        rows.append(("ttft", _percentiles(summary.ttft)))
    lines = [f"{label:<{LABEL_WIDTH}}{value}" for label, value in rows]
    if summary.samples:
        lines.append("first errors")
        for status, messages in summary.samples.items():
            lines += [f"  {status:<{LABEL_WIDTH - 2}}{message}" for message in messages]
    if checks:
        lines.append("thresholds")
        lines += [f"  {'ok' if c.passed else 'FAIL':<{LABEL_WIDTH - 2}}{c.reason}" for c in checks]
    return "\n".join(lines) + "\n"


def _error_counts(summary: Summary) -> str:
    if not summary.errors:
        return "0"
    counts = ", ".join(f"{s}: {n}" for s, n in summary.errors_by_status.items())
    return f"{summary.errors} ({counts})"


def _throughput(summary: Summary) -> str:
    text = f"{summary.requests_per_s:.1f} req/s"
    if summary.tokens_per_s is not None:
        text += f", {summary.tokens_per_s:.1f} completion tokens/s"
    return text


def _percentiles(values: Percentiles | None) -> str:
    if values is None:
        return "- (none measured)"
    return (
        f"p50 {values.p50:.3f} s  p95 {values.p95:.3f} s  p99 {values.p99:.3f} s  "
        f"max {values.max:.3f} s"
    )
