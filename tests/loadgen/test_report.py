"""The progress and the summary as text."""

from __future__ import annotations

from loadgen.report import progress_bar, progress_line, summary_table
from loadgen.runner import Progress
from loadgen.stats import Outcome, Thresholds, evaluate, summarize


def test_progress_by_count() -> None:
    progress = Progress(done=25, errors=1, in_flight=4, elapsed_s=2.5, total=100, duration_s=None)
    assert progress_bar(progress) == (
        "[########......................] 25/100  10.0 req/s  1 error  2.5s"
    )
    assert progress_line(progress) == ("loadtest: 25/100 done, 10.0 req/s, 1 error, 4 in flight")


def test_progress_by_duration_stays_within_its_bar_past_the_deadline() -> None:
    progress = Progress(done=90, errors=0, in_flight=2, elapsed_s=31, total=None, duration_s=30)
    assert progress_bar(progress).startswith("[" + "#" * 30 + "] 31s/30s 90 done  2.9 req/s")
    assert progress_line(progress) == (
        "loadtest: 90 done, 31s of 30s, 2.9 req/s, 0 errors, 2 in flight"
    )


def test_summary_table() -> None:
    outcomes = [Outcome("200", 0.5, ttft_s=0.1, completion_tokens=8)] * 3
    outcomes.append(Outcome("503", 0.01, error="all nodes busy"))
    summary = summarize(outcomes, model="qwen3-32b", stream=True, concurrency=2, duration_s=2)
    checks = evaluate(summary, Thresholds(max_error_rate=0.005, max_p95_s=4.5))
    assert summary_table(summary, checks, url="http://gw/v1") == (
        "loadtest    qwen3-32b at http://gw/v1, streamed, 2 clients, 2.00 s\n"
        "requests    4\n"
        "ok          3\n"
        "errors      1 (503: 1)\n"
        "error rate  25.00%\n"
        "throughput  2.0 req/s, 12.0 completion tokens/s\n"
        "latency     p50 0.500 s  p95 0.500 s  p99 0.500 s  max 0.500 s\n"
        "ttft        p50 0.100 s  p95 0.100 s  p99 0.100 s  max 0.100 s\n"
        "first errors\n"
        "  503       all nodes busy\n"
        "thresholds\n"
        "  FAIL      error rate 25.00% > 0.50% (503: 1)\n"
        "  ok        latency p95 0.500 s <= 4.5 s\n"
    )


def test_summary_table_without_streams_or_successes() -> None:
    summary = summarize(
        [Outcome("401", 0.01)], model="m", stream=False, concurrency=1, duration_s=1
    )
    table = summary_table(summary, [])
    assert "ttft" not in table and "thresholds" not in table
    assert "latency     - (none measured)\n" in table
