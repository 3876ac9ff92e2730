"""The checks, in the order they run (the request-path checks last: they need the others'
findings to make sense, and the smoke load must come before the latency check that reads
its requests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckSpec:
    key: str
    title: str
    description: str


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "database",
        "Database reachable and migrated",
        "A query answers and no migration is left unapplied.",
    ),
    CheckSpec(
        "redis",
        "Redis reachable",
        "PING answers and a key can be written and read back (limits, queues, the routing "
        "version and the request-log buffer live there).",
    ),
    CheckSpec(
        "nodes-configured",
        "At least one enabled node serves every enabled profile",
        "A profile without an enabled node answers every request with 503.",
    ),
    CheckSpec(
        "upstreams-listening",
        "Every enabled node's upstream is listening",
        "An HTTP answer from each node's base URL (over verified TLS where it is https).",
    ),
    CheckSpec(
        "models-listed",
        "Each node lists all its deployed models",
        "Ollama /api/tags or the OpenAI /v1/models list names every deployed model.",
    ),
    CheckSpec(
        "context-windows",
        "Profiles' context windows match what the upstreams serve",
        "vLLM's max_model_len equals the profile's window; an Ollama model's context length "
        "is at least the window sent as num_ctx.",
    ),
    CheckSpec(
        "nodes-ready",
        "Every enabled node is READY",
        "The 5-second probe's state machine says READY (not UNKNOWN, DEGRADED or DOWN).",
    ),
    CheckSpec(
        "gpu-memory",
        "GPU memory under the limit",
        "On nodes whose agent reports telemetry, every GPU's memory use is at or under "
        "CLAWDBOT_READY_MAX_GPU_MEMORY_PCT (85 %).",
    ),
    CheckSpec(
        "self-heal-commands",
        "Self-heal commands present and executable",
        "On nodes with a restart command, the agent reports the command's program found and "
        "executable on the GPU host.",
    ),
    CheckSpec(
        "shared-storage",
        "Shared model storage readable and writable",
        "Where CLAWDBOT_SHARED_MODEL_DIR is set: a file can be written, read and removed.",
    ),
    CheckSpec(
        "auth-enforced",
        "API-key authentication enforced on /v1",
        "Requests without a key, or with an unknown one, are refused with 401.",
    ),
    CheckSpec(
        "metrics-router-up",
        "clawdbot_router_up is 1 on /metrics",
        "A real scrape of the gateway's /metrics parses and reports the router up.",
    ),
    CheckSpec(
        "smoke-load",
        "Smoke load: error rate under the limit",
        "CLAWDBOT_READY_SMOKE_REQUESTS (100) requests sent at once through /v1, shared out "
        "between the deployed profiles; "
        "the error rate stays under CLAWDBOT_READY_MAX_ERROR_RATE (0.5 %).",
    ),
    CheckSpec(
        "latency-p95",
        "P95 latency under the GPU class's threshold",
        "Per node, the 95th percentile of the smoke load's latency is under "
        "CLAWDBOT_READY_P95_SMALL_GPU_S (4.5 s) for cards under 40 GB and "
        "CLAWDBOT_READY_P95_LARGE_GPU_S (2.8 s) for 40 GB and up.",
    ),
)

KEYS = tuple(spec.key for spec in CHECKS)
BY_KEY = {spec.key: spec for spec in CHECKS}
