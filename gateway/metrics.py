"""Prometheus metrics kept in Redis, so every gateway process adds to the same series and any
process's /metrics shows the cluster's numbers. Requests add to them in the pipeline that
ends the request; /metrics renders them with live node load and the routing snapshot.

The model label is only ever a profile the routing snapshot knows, or "-" when no profile
served the request: a client's model string would make label values (and Redis keys) without
bound, and could hold the field separator."""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from clawdbot_site import redis_keys
from nodes import conversations_learned, server_load_store, telemetry_store

log = logging.getLogger(__name__)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REQUESTS = redis_keys.METRIC_REQUESTS
TOKENS = redis_keys.METRIC_TOKENS
HISTOGRAMS = {"duration": redis_keys.METRIC_DURATION, "ttft": redis_keys.METRIC_TTFT}
MODELS = redis_keys.METRIC_MODELS
SEP = "\x1f"
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


_BUCKET_FIELDS = [repr(bound) for bound in BUCKETS] + ["+Inf"]


def bucket_field(seconds: float) -> str:
    return _BUCKET_FIELDS[bisect_left(BUCKETS, seconds)]


def record_args(
    *,
    model: str,
    node: str,
    status: int,
    duration_s: float,
    ttft_s: float | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    log_entry: bytes,
    affinity: str = "",
) -> list[Any]:
    """The metric and log arguments of the RELEASE script (gateway.admission), in its order.
    `model` is the profile that served the request ("" for none), never the client's string."""
    model = model or "-"
    return [
        model,
        f"{model}{SEP}{node or '-'}{SEP}{status}",
        bucket_field(duration_s),
        repr(duration_s),
        bucket_field(ttft_s) if ttft_s is not None else "",
        repr(ttft_s) if ttft_s is not None else "0",
        prompt_tokens or 0,
        completion_tokens or 0,
        f"{model}{SEP}prompt",
        f"{model}{SEP}completion",
        log_entry,
        affinity,
    ]


_reported: set[str] = set()


def _malformed(series: str, field: object) -> None:
    """Skip a stored field that cannot be read. Say so once per series and process: every
    scrape would repeat it until someone deletes the field."""
    if series not in _reported:
        _reported.add(series)
        log.warning("%s: skipping malformed stored field %r (and any more)", series, field)


def _counter(
    name: str, doc: str, labels: list[str], rows: dict[bytes, bytes]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for field, count in sorted(rows.items()):
        try:
            values, value = field.decode().split(SEP), int(count)
        except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError) or not a count
            values, value = [], 0
        if len(values) != len(labels):
            _malformed(name, field)
            continue
        family.add_metric(values, value)
    return family


def _histogram(name: str, doc: str, rows: dict[str, dict[bytes, bytes]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    for model, fields in sorted(rows.items()):
        try:
            cumulative = 0
            buckets = []
            for edge in _BUCKET_FIELDS:
                cumulative += int(fields.get(edge.encode(), 0))
                buckets.append((edge, cumulative))
            total = float(fields.get(b"sum", 0.0))
        except ValueError:
            _malformed(name, model)
            continue
        family.add_metric([model], buckets, total)
    return family


class RedisCollector(Collector):
    """Collects from data fetched beforehand (collection itself must not do async I/O)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def collect(self) -> Iterator[Any]:
        d = self.data
        up = GaugeMetricFamily("clawdbot_router_up", "1 while this gateway process serves.")
        up.add_metric([], 1)
        yield up
        yield _counter(
            "clawdbot_requests", "Requests answered.", ["model", "node", "status"], d["requests"]
        )
        yield _counter("clawdbot_tokens", "Tokens.", ["model", "kind"], d["tokens"])
        yield _counter(
            "clawdbot_affinity",
            "Requests continuing a conversation, by how affinity placed them: hit (the node "
            "holding its prefix), rebalanced (another, that one too busy), miss (none held it).",
            ["result"],
            d.get("affinity", {}),
        )
        yield _histogram("clawdbot_request_duration_seconds", "Request duration.", d["duration"])
        yield _histogram("clawdbot_time_to_first_token_seconds", "Time to first token.", d["ttft"])
        inflight = GaugeMetricFamily(
            "clawdbot_node_in_flight", "Requests running.", labels=["node"]
        )
        queued = GaugeMetricFamily("clawdbot_node_queued", "Requests waiting.", labels=["node"])
        node_up = GaugeMetricFamily("clawdbot_node_up", "1 when READY.", labels=["node", "state"])
        weight = GaugeMetricFamily("clawdbot_node_weight", "Routing weight.", labels=["node"])
        ejected = GaugeMetricFamily(
            "clawdbot_node_ejected", "1 while passively ejected.", labels=["node"]
        )
        for node in d["nodes"]:
            running, waiting = d["load"].get(node.name, (0, 0))
            inflight.add_metric([node.name], running)
            queued.add_metric([node.name], waiting)
            node_up.add_metric([node.name, node.state], 1 if node.routable else 0)
            weight.add_metric([node.name], node.weight)
            ejected.add_metric([node.name], 1 if node.name in d["ejected"] else 0)
        yield from (inflight, queued, node_up, weight, ejected)
        yield from _gpu_families(d["nodes"], d.get("telemetry", {}))
        yield from _speed_families(d.get("speeds", {}))
        yield from _server_load_families(d.get("server_load", {}))
        yield from _conversation_families(d.get("conversations"), d.get("prefix_caches", {}))
        rejected = CounterMetricFamily(
            "clawdbot_request_log_rejected",
            "Request-log entries the database refused, set aside (clawdbot requestlog).",
        )
        rejected.add_metric([], d["log_rejected"])
        backlog = GaugeMetricFamily(
            "clawdbot_request_log_backlog", "Request-log entries waiting to be flushed."
        )
        backlog.add_metric([], d["log_backlog"])
        yield from (rejected, backlog)
        tier = GaugeMetricFamily(
            "clawdbot_degradation_tier",
            "The cluster's degradation tier: 0 normal, 1 cache, 2 downgrade, 3 static.",
        )
        tier.add_metric([], d["tier"])
        rate = GaugeMetricFamily(
            "clawdbot_cluster_error_rate",
            "Requests the cluster failed over all requests, in the degradation window.",
        )
        rate.add_metric([], d["error_rate"])
        yield from (tier, rate)
        version = GaugeMetricFamily("clawdbot_routing_version", "Snapshot version in use.")
        version.add_metric([], d["version"])
        yield version


async def fetch(client: Any, snapshot: Any, now_ms: int) -> dict[str, Any]:
    """Everything /metrics shows, in one pipelined round trip (plus one for model names)."""
    models = []
    for raw in await client.smembers(MODELS):
        try:
            models.append(raw.decode())
        except UnicodeDecodeError:
            _malformed(MODELS, raw)
    models.sort()
    nodes = list(snapshot.nodes.values())
    # Learned speeds (gateway.routing), for every deployment the snapshot routes.
    pairs = sorted({(r.node.name, m) for m, routes in snapshot.routes.items() for r in routes})
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(REQUESTS)
        pipe.hgetall(TOKENS)
        pipe.get(redis_keys.METRIC_LOG_REJECTED)
        pipe.llen(redis_keys.REQUEST_LOG)
        pipe.hmget(redis_keys.TIER, "tier", "requests", "failures")
        pipe.hgetall(redis_keys.METRIC_AFFINITY)
        pipe.hgetall(redis_keys.CONVERSATION_STATS)
        for model in models:
            pipe.hgetall(HISTOGRAMS["duration"] + model)
            pipe.hgetall(HISTOGRAMS["ttft"] + model)
        for node in nodes:
            pipe.zcount(redis_keys.slots(node.name), now_ms, "+inf")
            pipe.zcount(redis_keys.queue(node.name), now_ms, "+inf")
            pipe.hget(redis_keys.ejection(node.name), "until")
            pipe.get(redis_keys.telemetry(node.name))
            pipe.hgetall(redis_keys.server_load(node.name))
            pipe.hgetall(redis_keys.prefix_cache(node.name))
        for node_name, model_id in pairs:
            pipe.hmget(redis_keys.speed(node_name, model_id), "d", "p", "n")
        results = await pipe.execute()
    data: dict[str, Any] = {
        "requests": results[0],
        "tokens": results[1],
        "duration": {},
        "ttft": {},
        "load": {},
        "ejected": set(),
        "telemetry": {},
        "server_load": {},
        "nodes": nodes,
        "version": snapshot.version,
        "log_rejected": int(results[2] or 0),
        "log_backlog": int(results[3]),
        **_tier(results[4]),
        "affinity": results[5],
        "conversations": conversations_learned.conversations(results[6]),
        "prefix_caches": {},
    }
    offset = 7
    for model in models:
        data["duration"][model] = results[offset]
        data["ttft"][model] = results[offset + 1]
        offset += 2
    for node in nodes:
        data["load"][node.name] = (int(results[offset]), int(results[offset + 1]))
        until = results[offset + 2]
        if until is not None and float(until) > now_ms:
            data["ejected"].add(node.name)
        data["telemetry"][node.name] = telemetry_store.decode(node.name, results[offset + 3])
        data["server_load"][node.name] = server_load_store.decode(node.name, results[offset + 4])
        cache = conversations_learned.prefix_cache(results[offset + 5], now_ms)
        if cache is not None:
            data["prefix_caches"][node.name] = cache
        offset += 6
    data["speeds"] = {}
    for pair, (decode, prefill, samples) in zip(pairs, results[offset:], strict=True):
        if decode is not None:
            data["speeds"][pair] = (float(decode), float(prefill or 0), float(samples or 0))
    return data


# (family name, help, the reading's field, factor to the family's unit)
_GPU_GAUGES = (
    (
        "clawdbot_gpu_utilisation_ratio",
        "GPU busy time, 0 to 1 (NVML).",
        "utilisation_gpu_pct",
        0.01,
    ),
    ("clawdbot_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_mib", 1024 * 1024),
    ("clawdbot_gpu_memory_total_bytes", "GPU memory in all.", "memory_total_mib", 1024 * 1024),
    ("clawdbot_gpu_temperature_celsius", "GPU core temperature.", "temperature_c", 1),
    ("clawdbot_gpu_power_watts", "GPU power draw.", "power_draw_w", 1),
    ("clawdbot_gpu_power_limit_watts", "GPU enforced power limit.", "power_limit_w", 1),
)


def _gpu_families(
    nodes: list[Any], readings: dict[str, dict[str, Any] | None]
) -> Iterator[GaugeMetricFamily]:
    """Per node and GPU index, from each node agent's latest reading in Redis. A node whose
    agent stopped reporting has no reading (its key expires), so its GPUs drop out of the
    families rather than showing their last numbers forever; so does a field NVML did not give."""
    families = [
        GaugeMetricFamily(name, doc, labels=["node", "gpu"]) for name, doc, _, _ in _GPU_GAUGES
    ]
    info = GaugeMetricFamily(
        "clawdbot_gpu_info", "1 per GPU an agent reports, named.", labels=["node", "gpu", "name"]
    )
    for node in nodes:
        reading = readings.get(node.name)
        if not reading or not reading.get("nvml"):
            continue
        for gpu in reading.get("gpus") or []:
            labels = [node.name, str(gpu.get("index", "?"))]
            info.add_metric([*labels, str(gpu.get("name") or "unknown")], 1)
            for family, (_, _, field, factor) in zip(families, _GPU_GAUGES, strict=True):
                value = gpu.get(field)
                if isinstance(value, int | float):
                    family.add_metric(labels, value * factor)
    yield info
    yield from families


def _tier(fields: list[bytes | None]) -> dict[str, float]:
    """The tier and the window's error rate, as the gateways' last degradation tick left
    them (gateway.degradation): 0 and 0 before any."""
    try:
        tier, requests, failures = (int(value or 0) for value in fields)
    except ValueError:
        _malformed(redis_keys.TIER, fields)
        return {"tier": 0, "error_rate": 0.0}
    return {"tier": tier, "error_rate": failures / requests if requests > 0 else 0.0}


def render(data: dict[str, Any]) -> bytes:
    """The Prometheus text of data from `fetch`."""
    registry = CollectorRegistry()
    registry.register(RedisCollector(data))
    return generate_latest(registry)


def _server_load_families(loads: dict[str, dict[str, Any] | None]) -> Iterator[Any]:
    """The load each node's server reports on its /metrics (nodes.server_load_store); a node
    whose server exports none, or was not read lately, is left out rather than shown idle."""
    running = GaugeMetricFamily(
        "clawdbot_node_server_requests_running",
        "Requests running, as the node's server reports them.",
        labels=["node"],
    )
    waiting = GaugeMetricFamily(
        "clawdbot_node_server_requests_waiting",
        "Requests queued in the node's server, as it reports them.",
        labels=["node"],
    )
    kv = GaugeMetricFamily(
        "clawdbot_node_kv_cache_usage",
        "KV-cache usage of the node's server, 0 to 1.",
        labels=["node"],
    )
    for node, load in sorted(loads.items()):
        if load is None:
            continue
        running.add_metric([node], load["running"])
        waiting.add_metric([node], load["waiting"])
        if load["kv"] is not None:
            kv.add_metric([node], load["kv"])
    yield from (running, waiting, kv)


def _speed_families(speeds: dict[tuple[str, str], tuple[float, float, float]]) -> Iterator[Any]:
    """What routing learned of each node's speed per model (gateway.routing)."""
    labels = ["node", "model"]
    decode = GaugeMetricFamily(
        "clawdbot_node_decode_tokens_per_second",
        "One sequence's decode speed, learned from answers (normalised to running alone).",
        labels=labels,
    )
    prefill = GaugeMetricFamily(
        "clawdbot_node_prefill_tokens_per_second",
        "Prefill speed, learned from streamed answers' first tokens.",
        labels=labels,
    )
    samples = GaugeMetricFamily(
        "clawdbot_node_speed_samples",
        "Recent answers behind the learned speed (older ones fade).",
        labels=labels,
    )
    for (node, model), (d, p, n) in sorted(speeds.items()):
        decode.add_metric([node, model], d)
        prefill.add_metric([node, model], p)
        samples.add_metric([node, model], n)
    yield from (decode, prefill, samples)


def _conversation_families(
    learned: conversations_learned.Conversations | None,
    caches: dict[str, conversations_learned.PrefixCache],
) -> Iterator[Any]:
    """What routing learned of conversations and of the nodes' prefix caches (README,
    "Conversation affinity")."""
    if learned is not None:
        share = GaugeMetricFamily(
            "clawdbot_conversation_continue_ratio",
            "The chance a turn gets a next one (learned; first turns apart from later ones).",
            labels=["turn"],
        )
        share.add_metric(["first"], learned.first_continue)
        share.add_metric(["later"], learned.later_continue)
        pause = GaugeMetricFamily(
            "clawdbot_conversation_pause_seconds",
            "The users' mean pause between turns (learned).",
        )
        pause.add_metric([], learned.pause_s)
        yield from (share, pause)
    holds = GaugeMetricFamily(
        "clawdbot_node_prefix_cache_tokens",
        "Tokens the node's prefix cache holds, learned from prefixes it kept or lost.",
        labels=["node"],
    )
    intake = GaugeMetricFamily(
        "clawdbot_node_prefix_cache_intake_tokens_per_second",
        "Tokens of followed prompts and answers the node's prefix cache takes in.",
        labels=["node"],
    )
    for node, cache in sorted(caches.items()):
        if cache.holds_tokens is not None:
            holds.add_metric([node], cache.holds_tokens)
        intake.add_metric([node], cache.intake_tps)
    yield from (holds, intake)
