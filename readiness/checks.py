"""The checks themselves: each gathers its findings (database, Redis, the nodes over HTTP,
agent reports, a real gateway's /v1 and /metrics) and hands them to `readiness.verdicts`.

The request-path checks need a gateway: `Context.gateway_url()` gives the one the run was
pointed at, or starts a private one on a loopback port (see `private_gateway`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from prometheus_client.parser import text_string_to_metric_families

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client
from gateway.models import RequestLog
from gateway.tasks import flush_request_logs
from nodes import telemetry_store
from nodes.discovery import same_model
from nodes.models import ModelProfile, Node
from nodes.placement import telemetry_memory
from nodes.probes import ProbeResult, probe
from readiness import verdicts
from readiness.verdicts import ServedWindow, Verdict, failed, from_problems, passed, skipped

HTTP_TIMEOUT_S = 10.0


class NoGateway(Exception):
    """The request-path checks cannot run: no gateway answers."""


class NodesUnavailable(Exception):
    """The node checks cannot run: the nodes could not be read from the database."""


@dataclass
class Context:
    """What one run shares between checks: the nodes, one probe of each, the gateway."""

    start_gateway: Callable[[], str]
    smoke_key: str
    smoke_prefix: str
    _gateway: str | None = None
    _gateway_error: str | None = None
    _probes: dict[str, ProbeResult] | None = None
    smoke_sent: bool = False
    smoke_disabled: bool = False
    _nodes: list[Node] | None = None
    _nodes_error: str = ""

    def __post_init__(self) -> None:
        try:
            self._nodes = list(
                Node.objects.filter(enabled=True)
                .prefetch_related("deployments__profile")
                .order_by("name")
            )
        except DatabaseError as exc:
            self._nodes_error = str(exc).strip().splitlines()[0] if str(exc).strip() else ""

    @property
    def nodes(self) -> list[Node]:
        """The enabled nodes; a check that needs them fails (not skips) when they could not
        be read."""
        if self._nodes is None:
            raise NodesUnavailable(
                "cannot read the nodes: the database is unavailable"
                + (f" ({self._nodes_error})" if self._nodes_error else "")
            )
        return self._nodes

    @property
    def gateway_started(self) -> bool:
        return self._gateway is not None

    def gateway_url(self) -> str:
        if self._gateway is None and self._gateway_error is None:
            try:
                self._gateway = self.start_gateway()
            except NoGateway as exc:
                self._gateway_error = str(exc)
        if self._gateway is None:
            raise NoGateway(self._gateway_error or "no gateway")
        return self._gateway

    def probes(self) -> dict[str, ProbeResult]:
        """One probe of every enabled node (with context lengths), shared by three checks."""
        if self._probes is None:
            self._probes = asyncio.run(_probe_all(self.nodes))
        return self._probes


async def _probe_all(nodes: list[Node]) -> dict[str, ProbeResult]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
        results = await asyncio.gather(
            *(
                probe(
                    client,
                    n.base_url,
                    n.kind,
                    [d.profile.upstream_model for d in n.deployments.all()],
                    with_context=True,
                )
                for n in nodes
            )
        )
    return {n.name: r for n, r in zip(nodes, results, strict=True)}


def database(ctx: Context) -> Verdict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        return failed(f"{len(plan)} migration(s) not applied ({names}): run `clawdbot migrate`")
    return passed(f"{connection.vendor} answers; migrations applied")


def redis_health(ctx: Context) -> Verdict:
    client = sync_client()
    try:
        client.ping()
        probe_key = redis_keys.readiness_probe(uuid.uuid4().hex)
        client.set(probe_key, b"1", ex=30)
        value = client.get(probe_key)
        client.delete(probe_key)
    finally:
        client.close()
    if value != b"1":
        return failed("a key written to Redis did not read back")
    return passed("PING answers; a key writes and reads back")


def nodes_configured(ctx: Context) -> Verdict:
    if not ctx.nodes:
        return failed("no enabled node: add one with `clawdbot onboard`")
    served = {d.profile.model_id for n in ctx.nodes for d in n.deployments.all()}
    profiles = ModelProfile.objects.filter(enabled=True).values_list("model_id", flat=True)
    problems = [f"{m} has no enabled node" for m in sorted(profiles) if m not in served]
    return from_problems(problems, f"{len(ctx.nodes)} node(s), every profile served")


def upstreams_listening(ctx: Context) -> Verdict:
    if not ctx.nodes:
        return skipped("no enabled node")

    async def check(client: httpx.AsyncClient, node: Node) -> str | None:
        try:
            await client.get(node.base_url.rstrip("/") + "/")
        except httpx.ConnectError as exc:
            return f"{node.name}: cannot connect to {node.base_url} ({exc or 'refused'})"
        except httpx.TimeoutException:
            return f"{node.name}: {node.base_url} did not answer within {HTTP_TIMEOUT_S:g} s"
        except httpx.HTTPError as exc:
            return f"{node.name}: {type(exc).__name__}: {exc}"
        return None  # any HTTP answer, 404 included: something is listening

    async def all_nodes() -> list[str | None]:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            return await asyncio.gather(*(check(client, n) for n in ctx.nodes))

    problems = [p for p in asyncio.run(all_nodes()) if p]
    tls = sum(1 for n in ctx.nodes if n.base_url.startswith("https://"))
    return from_problems(
        problems, f"{len(ctx.nodes)} upstream(s) answer" + (f" ({tls} over TLS)" if tls else "")
    )


def models_listed(ctx: Context) -> Verdict:
    if not ctx.nodes:
        return skipped("no enabled node")
    problems = [f"{name}: {result.error}" for name, result in ctx.probes().items() if not result.ok]
    deployed = sum(len(n.deployments.all()) for n in ctx.nodes)
    return from_problems(problems, f"{deployed} deployed model(s) listed")


def context_windows(ctx: Context) -> Verdict:
    probes = ctx.probes()
    findings = []
    unreachable = []
    for node in ctx.nodes:
        result = probes[node.name]
        if not result.models:
            if node.deployments.all():
                unreachable.append(f"{node.name}: {result.error or 'no models listed'}")
            continue
        for deployment in node.deployments.all():
            profile = deployment.profile
            served = next(
                (
                    m.context_length
                    for m in result.models
                    if same_model(m.name, profile.upstream_model)
                ),
                None,
            )
            findings.append(
                ServedWindow(
                    node.name, node.api_kind, profile.model_id, profile.context_window, served
                )
            )
    verdict = verdicts.context_windows(findings)
    if unreachable:
        problems = [*verdict.details.get("problems", []), *unreachable]
        return from_problems(problems, verdict.reason)
    return verdict


def nodes_ready(ctx: Context) -> Verdict:
    # The states as of now (the probes may have moved them since the run started).
    states = dict(Node.objects.filter(enabled=True).values_list("name", "state"))
    return verdicts.nodes_ready(states)


def gpu_memory(ctx: Context) -> Verdict:
    readings = telemetry_store.latest([n.name for n in ctx.nodes])
    return verdicts.gpu_memory(readings, settings.CLAWDBOT_READY_MAX_GPU_MEMORY_PCT)


def self_heal_commands(ctx: Context) -> Verdict:
    commands = {n.name: n.restart_command for n in ctx.nodes if n.restart_command.strip()}
    readings = telemetry_store.latest(list(commands))
    reports = {name: (reading or {}).get("restart_command") for name, reading in readings.items()}
    return verdicts.self_heal(commands, reports)


def shared_storage(ctx: Context) -> Verdict:
    root = settings.CLAWDBOT_SHARED_MODEL_DIR
    if not root:
        return skipped("CLAWDBOT_SHARED_MODEL_DIR is not set")
    path = Path(root)
    if not path.is_dir():
        return failed(f"{root} is not a directory (or is not mounted)")
    try:
        entries = sum(1 for _ in path.iterdir())
        fd, name = tempfile.mkstemp(prefix=".clawdbot-readiness-", dir=path)
        try:
            os.write(fd, b"clawdbot")
            os.close(fd)
            if Path(name).read_bytes() != b"clawdbot":
                return failed(f"a file written to {root} read back different")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    except OSError as exc:
        return failed(f"{root}: {exc.strerror or exc}")
    return passed(f"{root} readable ({entries} entries) and writable")


def auth_enforced(ctx: Context) -> Verdict:
    url = ctx.gateway_url()
    attempts = {
        "no key": {},
        "an unknown key": {"authorization": "Bearer ck-readines-" + "0" * 32},
        "a malformed header": {"authorization": "Basic YWRtaW46YWRtaW4="},
    }
    problems = []
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        for what, headers in attempts.items():
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
                body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
                response = client.request(
                    method, url + path, headers=headers, json=body if method == "POST" else None
                )
                if response.status_code != 401:
                    problems.append(f"{method} {path} with {what} answered {response.status_code}")
    return from_problems(problems, "requests without a valid key are refused with 401")


def metrics_router_up(ctx: Context) -> Verdict:
    url = ctx.gateway_url() + "/metrics"
    response = httpx.get(url, timeout=HTTP_TIMEOUT_S)
    if response.status_code != 200:
        return failed(f"GET /metrics answered {response.status_code}")
    try:
        families = list(text_string_to_metric_families(response.text))
    except ValueError as exc:
        return failed(f"/metrics is not valid Prometheus text: {exc}")
    values = [s.value for f in families if f.name == "clawdbot_router_up" for s in f.samples]
    if not values:
        return failed("/metrics has no clawdbot_router_up")
    if values[0] != 1:
        return failed(f"clawdbot_router_up is {values[0]:g}")
    return passed(f"clawdbot_router_up 1 ({len(families)} metric families scraped)")


def smoke_load(ctx: Context) -> Verdict:
    """CLAWDBOT_READY_SMOKE_REQUESTS requests sent at once, shared out between the deployed
    profiles (a burst of 100 is 100 in all, not 100 per model)."""
    from loadgen.runner import LoadError, run_load  # the client tool; only here

    url = ctx.gateway_url()
    served = {d.profile.model_id for n in ctx.nodes for d in n.deployments.all()}
    models = list(
        ModelProfile.objects.filter(enabled=True, model_id__in=served)
        .order_by("model_id")
        .values_list("model_id", flat=True)
    )
    if not models:
        return failed("no enabled profile is deployed on an enabled node")
    _wait_for_key(url, ctx.smoke_key)
    shares = verdicts.share_out(settings.CLAWDBOT_READY_SMOKE_REQUESTS, models)

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(
                run_load(
                    url,
                    ctx.smoke_key,
                    model,
                    concurrency=share,
                    requests=share,
                    max_tokens=settings.CLAWDBOT_READY_SMOKE_MAX_TOKENS,
                    timeout_s=settings.CLAWDBOT_READ_TIMEOUT_S + 5,
                )
                for model, share in shares.items()
            ),
            return_exceptions=True,
        )

    summaries = asyncio.run(burst())
    for model, summary in zip(shares, summaries, strict=True):
        if isinstance(summary, LoadError):  # unreachable, key refused, model not offered
            return failed(f"{model}: the smoke load could not start: {summary}")
        if isinstance(summary, BaseException):
            raise summary
    ctx.smoke_sent = True
    total = 0
    errors: dict[str, int] = defaultdict(int)
    per_model = {}
    for model, summary in zip(shares, summaries, strict=True):
        total += summary.requests
        for status, n in summary.errors_by_status.items():
            errors[f"{model} {status}"] += n
        per_model[model] = summary.to_dict()
    verdict = verdicts.error_rate(total, errors, settings.CLAWDBOT_READY_MAX_ERROR_RATE)
    reason = verdict.reason
    if verdict.status == verdicts.FAIL:
        reason += verdicts.capacity_hint(_capacity(ctx.nodes, list(shares)), shares)
    return verdicts.Verdict(verdict.status, reason, {**verdict.details, "load": per_model})


def _capacity(nodes: list[Node], models: list[str]) -> dict[str, int]:
    """Requests each model's nodes admit at once: running plus queued."""
    capacity = dict.fromkeys(models, 0)
    for node in nodes:
        if node.draining:
            continue
        for deployment in node.deployments.all():
            if deployment.profile.model_id in capacity:
                capacity[deployment.profile.model_id] += node.max_concurrent + node.queue_size
    return capacity


def _wait_for_key(url: str, key: str, wait_s: float = 5.0) -> None:
    """A gateway that was already running learns of the new smoke key within about a
    second (the routing version): wait for that, bounded, rather than fail the first
    requests with 401."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        answer = httpx.get(
            url + "/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S
        )
        if answer.status_code != 401:
            return
        time.sleep(0.1)  # bounded poll of the gateway's own answer


def latency_p95(ctx: Context) -> Verdict:
    if ctx.smoke_disabled:
        return skipped("the smoke load is disabled, so there is nothing to measure")
    if not ctx.smoke_sent:
        return failed("the smoke load did not run, so there is nothing to measure")
    flush_request_logs()  # the smoke requests' log entries, from the Redis buffer
    # The smoke load's answers only: not the model-list requests that waited for its key.
    rows = (
        RequestLog.objects.filter(key_prefix=ctx.smoke_prefix, status=200)
        .exclude(node="")
        .values_list("node", "latency_ms")
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    for node, latency_ms in rows:
        latencies[node].append(latency_ms / 1000)
    measured = telemetry_memory(ctx.nodes)  # whole-node GB, for nodes with no VRAM configured
    memory = {
        n.name: n.vram_gb_per_gpu or (measured.get(n.name) or 0.0) / max(n.gpu_count, 1)
        for n in ctx.nodes
    }
    return verdicts.latency_p95(
        latencies,
        memory,
        settings.CLAWDBOT_READY_P95_SMALL_GPU_S,
        settings.CLAWDBOT_READY_P95_LARGE_GPU_S,
    )


CHECKS: dict[str, Callable[[Context], Verdict]] = {
    "database": database,
    "redis": redis_health,
    "nodes-configured": nodes_configured,
    "upstreams-listening": upstreams_listening,
    "models-listed": models_listed,
    "context-windows": context_windows,
    "nodes-ready": nodes_ready,
    "gpu-memory": gpu_memory,
    "self-heal-commands": self_heal_commands,
    "shared-storage": shared_storage,
    "auth-enforced": auth_enforced,
    "metrics-router-up": metrics_router_up,
    "smoke-load": smoke_load,
    "latency-p95": latency_p95,
}


def describe_failure(exc: BaseException) -> str:
    """A check that raised: its reason, without a traceback."""
    if isinstance(exc, NoGateway):
        return f"no gateway to check: {exc}"
    if isinstance(exc, NodesUnavailable):
        return str(exc)
    if isinstance(exc, httpx.HTTPError):
        return f"the gateway did not answer: {type(exc).__name__}: {exc}"
    return f"the check failed to run: {type(exc).__name__}: {exc}"
