"""The Prometheus text parser and reading each server kind's load gauges: pure functions."""

from __future__ import annotations

import math

from nodes.prometheus_text import Sample, parse, parse_line
from nodes.server_load import ServerLoad, read_load

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 2.0
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 7.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.9
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.5
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="Qwen/Qwen3-8B"} 12.0
"""


def test_a_line_with_labels_escapes_and_a_timestamp() -> None:
    line = r'http_requests_total{method="post",path="/a,b}",note="say \"hi\"\n"} 1027 1395066363000'
    sample = parse_line(line)
    assert sample == Sample(
        "http_requests_total", 1027.0, {"method": "post", "path": "/a,b}", "note": 'say "hi"\n'}
    )
    assert parse_line("plain_gauge 4.5e-1") == Sample("plain_gauge", 0.45, {})
    assert parse_line('spaced{ a = "1" , } 2') == Sample("spaced", 2.0, {"a": "1"})


def test_special_values_parse_and_unreadable_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "# TYPE g gauge",
            "g NaN",
            "g +Inf",
            "g -Inf",
            'g{a="unterminated} 1',
            "g{a=1} 1",
            "g notanumber",
            "g",
            "",
            "# EOF",
            'g{a="ok"} 3',
        ]
    )
    samples = parse(text)
    assert math.isnan(samples[0].value)
    assert [s.value for s in samples[1:]] == [math.inf, -math.inf, 3.0]
    assert samples[-1].labels == {"a": "ok"}


def test_a_names_filter_skips_other_metrics_and_lookalike_prefixes() -> None:
    text = VLLM + "vllm:num_requests_running_total 99\n"
    samples = parse(text, ["vllm:num_requests_running"])
    assert [s.value for s in samples] == [3.0, 2.0]


def test_vllm_load_adds_requests_up_and_averages_kv_over_engines() -> None:
    assert read_load("vllm", parse(VLLM)) == ServerLoad(running=5, waiting=7, kv=0.7)


def test_the_older_vllm_kv_gauge_is_read_when_the_new_one_is_absent() -> None:
    text = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.25\n"
    assert read_load("vllm", parse(text)) == ServerLoad(running=1, waiting=0, kv=0.25)


def test_each_kind_reads_its_own_gauges() -> None:
    sglang = 'sglang:num_running_reqs{model_name="m"} 4\nsglang:num_queue_reqs{model_name="m"} 2\n'
    sglang += 'sglang:token_usage{model_name="m"} 0.31\n'
    llamacpp = "llamacpp:requests_processing 1\nllamacpp:requests_deferred 3\n"
    tgi = "tgi_batch_current_size 6\ntgi_queue_size 1\n"
    assert read_load("sglang", parse(sglang)) == ServerLoad(4, 2, 0.31)
    # Newer llama-server builds export no KV-cache ratio: kv is unknown, not 0.
    assert read_load("llamacpp", parse(llamacpp)) == ServerLoad(1, 3, None)
    assert read_load("tgi", parse(tgi)) == ServerLoad(6, 1, None)
    # Another kind's gauges are not this kind's.
    assert read_load("vllm", parse(sglang)) is None
    assert read_load("openai", parse(VLLM)) is None


def test_nonsense_values_are_dropped_or_clamped() -> None:
    text = "vllm:num_requests_running NaN\nvllm:num_requests_waiting 2\n"
    text += "vllm:kv_cache_usage_perc 1.7\n"
    assert read_load("vllm", parse(text)) == ServerLoad(running=0, waiting=2, kv=1.0)
    assert read_load("vllm", parse("vllm:num_requests_running -3\n")) == ServerLoad(0, 0, None)
