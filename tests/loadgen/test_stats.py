"""The summary of a run and the thresholds held against it: plain data, no network."""

from __future__ import annotations

import pytest

from loadgen.stats import (
    SAMPLES_PER_BUCKET,
    Outcome,
    Percentiles,
    Summary,
    Thresholds,
    evaluate,
    percentile,
    percentiles,
    summarize,
    violations,
)


def run(outcomes: list[Outcome], *, stream: bool = False, duration_s: float = 2.0) -> Summary:
    return summarize(outcomes, model="m", stream=stream, concurrency=4, duration_s=duration_s)


def test_percentiles_are_nearest_rank_so_each_is_a_value_some_request_had() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentiles([0.3, 0.1, 0.2]) == Percentiles(p50=0.2, p95=0.3, p99=0.3, max=0.3)
    assert percentiles([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)


def test_counts_rates_and_percentiles_over_the_successes() -> None:
    outcomes = [Outcome("200", 0.1 * i, completion_tokens=10) for i in range(1, 9)]
    outcomes += [
        Outcome("503", 0.001, error="no node free"),
        Outcome("timeout", 5.0, error="no complete answer within 5 s"),
    ]
    summary = run(outcomes, duration_s=2.0)
    assert (summary.requests, summary.ok, summary.errors) == (10, 8, 2)
    assert summary.statuses == {"200": 8, "503": 1, "timeout": 1}
    assert summary.errors_by_status == {"503": 1, "timeout": 1}
    assert summary.error_rate == pytest.approx(0.2)
    assert summary.requests_per_s == pytest.approx(5.0)
    assert summary.completion_tokens == 80 and summary.tokens_per_s == pytest.approx(40.0)
    # The 1 ms refusal and the 5 s timeout are not latencies of answers.
    assert summary.latency is not None
    assert summary.latency.p50 == pytest.approx(0.4) and summary.latency.max == pytest.approx(0.8)
    assert summary.ttft is None


def test_statuses_most_frequent_first_and_every_2xx_counts_as_ok() -> None:
    outcomes = [Outcome("500", 0.1), Outcome("201", 0.1), Outcome("429", 0.1), Outcome("429", 1)]
    summary = run(outcomes)
    assert list(summary.statuses) == ["429", "201", "500"]
    assert summary.ok == 1


def test_time_to_first_token_from_streams() -> None:
    outcomes = [Outcome("200", 1.0, ttft_s=0.05 * i) for i in range(1, 21)]
    outcomes.append(Outcome("stream_error", 0.5, ttft_s=0.01, error="cut"))
    summary = run(outcomes, stream=True)
    assert summary.ttft is not None
    assert summary.ttft.p95 == pytest.approx(0.95)
    assert summary.ttft.max == pytest.approx(1.0)
    assert summary.errors_by_status == {"stream_error": 1}


def test_the_first_distinct_messages_of_each_kind_are_kept() -> None:
    outcomes = [Outcome("500", 0.1, error=f"boom {i % 5}") for i in range(20)]
    outcomes += [Outcome("connect_error", 0.1, error="refused")] * 4
    summary = run(outcomes)
    assert summary.samples["500"] == [f"boom {i}" for i in range(SAMPLES_PER_BUCKET)]
    assert summary.samples["connect_error"] == ["refused"]


def test_no_usage_means_no_token_rate() -> None:
    summary = run([Outcome("200", 0.1)])
    assert summary.completion_tokens is None and summary.tokens_per_s is None


def test_to_dict_is_plain_json_data() -> None:
    summary = run([Outcome("200", 0.2, ttft_s=0.1, completion_tokens=3), Outcome("500", 0.1)])
    data = summary.to_dict()
    assert data["requests"] == 2 and data["ok"] == 1 and data["errors"] == 1
    assert data["errors_by_status"] == {"500": 1}
    assert data["error_rate"] == 0.5
    assert data["latency_s"] == {"p50": 0.2, "p95": 0.2, "p99": 0.2, "max": 0.2}
    assert data["ttft_s"]["p95"] == 0.1
    assert data["tokens_per_s"] == 1.5
    assert run([]).to_dict()["latency_s"] is None


def test_no_thresholds_no_checks() -> None:
    assert evaluate(run([Outcome("500", 0.1)]), Thresholds()) == []


def test_thresholds_held() -> None:
    summary = run([Outcome("200", 0.1 * i, ttft_s=0.01) for i in range(1, 11)], stream=True)
    thresholds = Thresholds(max_error_rate=0.0, max_p95_s=1.0, max_p99_s=1.0, max_ttft_p95_s=0.1)
    checks = evaluate(summary, thresholds)
    assert [c.name for c in checks] == [
        "max_error_rate",
        "max_p95_s",
        "max_p99_s",
        "max_ttft_p95_s",
    ]
    assert all(c.passed for c in checks)
    assert violations(summary, thresholds) == []
    assert checks[1].reason == "latency p95 1.000 s <= 1 s"


def test_broken_thresholds_say_why_and_name_the_failing_statuses() -> None:
    outcomes = [Outcome("200", 2.0, ttft_s=0.9)] * 6 + [Outcome("502", 0.1)] * 3
    outcomes.append(Outcome("timeout", 9.0))
    summary = run(outcomes, stream=True)
    broken = violations(
        summary,
        Thresholds(max_error_rate=0.005, max_p95_s=1.5, max_p99_s=3, max_ttft_p95_s=0.5),
    )
    assert [(v.name, v.actual) for v in broken] == [
        ("max_error_rate", pytest.approx(0.4)),
        ("max_p95_s", 2.0),
        ("max_ttft_p95_s", 0.9),
    ]
    assert broken[0].reason == "error rate 40.00% > 0.50% (502: 3, timeout: 1)"
    assert broken[1].reason == "latency p95 2.000 s > 1.5 s"
    assert broken[2].reason == "time to first token p95 0.900 s > 0.5 s"


def test_what_was_not_measured_fails_its_threshold() -> None:
    all_failed = run([Outcome("503", 0.1)] * 3)
    broken = violations(all_failed, Thresholds(max_p99_s=1.0, max_ttft_p95_s=1.0))
    assert [v.reason for v in broken] == [
        "latency p99: not measured (no request succeeded)",
        "time to first token p95: not measured (not streamed)",
    ]
    nothing = violations(run([]), Thresholds(max_error_rate=0.5))
    assert [v.reason for v in nothing] == ["error rate: no request finished"]
