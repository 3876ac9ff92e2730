"""A node's load as its inference server reports it: requests running, requests waiting and
KV-cache usage, read from the gauges each server kind exports on /metrics. Pure.

The gateway's own count of a node's requests misses what it does not send: other clients of
the same server, and how full the KV cache is (a few long prompts can fill it while the
in-flight count looks low). These gauges say both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodes.choices import ServerKind
from nodes.prometheus_text import Sample, finite


@dataclass(frozen=True, slots=True)
class Gauges:
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv: tuple[str, ...]  # 0..1; the first one the server exports is read

    @property
    def names(self) -> tuple[str, ...]:
        return self.running + self.waiting + self.kv


GAUGES: Mapping[str, Gauges] = {
    # vllm:gpu_cache_usage_perc is the name before vLLM's V1 engine; both are 0..1.
    ServerKind.VLLM: Gauges(
        ("vllm:num_requests_running",),
        ("vllm:num_requests_waiting",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    ServerKind.SGLANG: Gauges(
        ("sglang:num_running_reqs",), ("sglang:num_queue_reqs",), ("sglang:token_usage",)
    ),
    # Only with llama-server --metrics; newer builds dropped the KV-cache ratio.
    ServerKind.LLAMACPP: Gauges(
        ("llamacpp:requests_processing",),
        ("llamacpp:requests_deferred",),
        ("llamacpp:kv_cache_usage_ratio",),
    ),
    ServerKind.TGI: Gauges(("tgi_batch_current_size",), ("tgi_queue_size",), ()),
}


@dataclass(frozen=True, slots=True)
class ServerLoad:
    running: int
    waiting: int
    kv: float | None  # 0..1; None when the server does not export it


def gauges_for(kind: str) -> Gauges | None:
    return GAUGES.get(kind)


def read_load(kind: str, samples: Sequence[Sample]) -> ServerLoad | None:
    """The load in a kind's samples, or None when they hold neither its running nor its
    waiting gauge (metrics turned off, or not the server the node says it is).

    Series are per model (and per engine with data parallelism): requests add up; KV usage
    is their mean, each engine having a cache of its own."""
    gauges = GAUGES.get(kind)
    if gauges is None:
        return None
    running = [v for name in gauges.running for v in finite(samples, name)]
    waiting = [v for name in gauges.waiting for v in finite(samples, name)]
    if not running and not waiting:
        return None
    kv = None
    for name in gauges.kv:
        values = finite(samples, name)
        if values:
            kv = min(1.0, max(0.0, sum(values) / len(values)))
            break
    return ServerLoad(
        running=max(0, round(sum(running))), waiting=max(0, round(sum(waiting))), kv=kv
    )
