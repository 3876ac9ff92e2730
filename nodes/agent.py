"""The node agent's tasks: they run on a GPU host, in `clawdbot agent --node NAME`, consuming
only the queue `node.NAME`. The control plane (`nodes.tasks`) sends them.

A GPU host may reach Redis and nothing else, so nothing here touches the database: no model
is imported, every argument is plain JSON and every result is a dict the sender stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import fields
from typing import Any, TypedDict

import httpx
from celery import shared_task
from django.conf import settings

from nodes import live_events, server_kinds, telemetry, telemetry_store
from nodes.warmup import WarmTarget, warm


def queue_for(node_name: str) -> str:
    """The Celery queue a node's agent consumes; everything sent to the agent goes there."""
    return f"node.{node_name}"


log = logging.getLogger(__name__)

OUTPUT_TAIL_BYTES = 2048
COMMAND_TIMEOUT_S = 60.0
MAX_WAIT_S = 200.0  # keeps a restart inside the task's time limit below
PROBE_TIMEOUT_S = 3.0
WARM_TASK_LIMIT_S = 900  # a few cold loads of large models, one after the other


class TelemetrySummary(TypedDict):
    node: str
    nvml: bool
    gpus: int
    utilisation: float | None
    temperature_c: float | None
    read_ms: float
    error: str


class RestartResult(TypedDict):
    ok: bool
    was_up: bool
    exit_status: int | None
    output: str
    recovered_after_s: float | None
    error: str


class WarmOutcome(TypedDict):
    model: str
    ok: bool
    load_ms: int | None
    prompt_ms: int | None
    error: str


@shared_task(name="nodes.agent.collect_telemetry", soft_time_limit=10, time_limit=15)
def collect_telemetry(
    node_name: str, ttl_s: float = telemetry_store.TELEMETRY_TTL_S, restart_command: str = ""
) -> TelemetrySummary:
    """Read the GPUs and publish the reading; a host without NVML publishes why instead.
    With the node's restart command, the reading also says whether its program is here and
    executable (the readiness checklist asks; only this host can tell)."""
    telemetry_store.heartbeat(node_name)
    nvml, _source = telemetry.nvml_from_env()
    reading: dict[str, Any] = dict(telemetry.read(nvml))
    if restart_command.strip():
        reading["restart_command"] = command_program_report(restart_command)
    telemetry_store.publish(node_name, reading, ttl_s=ttl_s)
    live_events.send(live_events.telemetry(node_name, reading))
    summary = telemetry_store.summarise(reading)
    return {
        "node": node_name,
        "nvml": reading["nvml"],
        "gpus": len(reading["gpus"]),
        "utilisation": None if summary is None else round(summary.utilisation, 3),
        "temperature_c": None if summary is None else summary.temperature_c,
        "read_ms": reading["read_ms"],
        "error": reading["error"],
    }


# acks_late off: a restart cut short by a crashed worker must not run again on redelivery;
# the control plane decides whether to send another.
@shared_task(
    name="nodes.agent.restart_backend", acks_late=False, soft_time_limit=300, time_limit=330
)
def restart_backend(
    node_name: str,
    command: str,
    base_url: str,
    api_kind: str,  # the server kind (an older control plane sends the API kind)
    wait_s: float = 120.0,
    command_timeout_s: float = COMMAND_TIMEOUT_S,
) -> RestartResult:
    """Run the node's restart command, then wait (bounded) until the backend answers again.

    `recovered_after_s` counts from the start of the command; `ok` needs the command to exit
    0 and the backend to answer within `wait_s`.
    """
    was_up = backend_answers(base_url, api_kind)
    if not command.strip():
        return _restart_result(was_up, error="no restart command is configured for this node")
    log.warning("restarting the backend of %s: %s", node_name, command)
    started = time.monotonic()
    exit_status, output, error = run_command(command, timeout_s=command_timeout_s)
    if exit_status != 0:
        # A failed restart is reported at once; waiting the full window would only delay it.
        return _restart_result(
            was_up,
            exit_status=exit_status,
            output=output,
            error=error or f"the restart command exited with status {exit_status}",
        )
    recovered = wait_until_answers(base_url, api_kind, min(max(wait_s, 0.0), MAX_WAIT_S))
    if not recovered:
        return _restart_result(
            was_up,
            exit_status=exit_status,
            output=output,
            error=f"the backend did not answer within {wait_s:g} s after the restart",
        )
    return _restart_result(
        was_up,
        ok=True,
        exit_status=exit_status,
        output=output,
        recovered_after_s=round(time.monotonic() - started, 2),
    )


@shared_task(
    name="nodes.agent.warm_models",
    soft_time_limit=WARM_TASK_LIMIT_S,
    time_limit=WARM_TASK_LIMIT_S + 30,
)
def warm_models(node_name: str, targets: list[dict[str, Any]]) -> list[WarmOutcome]:
    """Preload (and run the warmup prompt of) each target, one after the other: loading two
    models at once on the same GPUs only makes both slower."""
    return asyncio.run(_warm_all(targets))


def backend_answers(base_url: str, kind: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the inference server is up: the server kind's liveness route (Ollama
    `GET /api/version`, vLLM `GET /health`, a server without /health `GET /v1/models`).
    `kind` is a server kind; an API kind (an older control plane's) names its plain server."""
    path = server_kinds.spec(kind).liveness
    try:
        response = httpx.get(base_url.rstrip("/") + path, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def wait_until_answers(base_url: str, api_kind: str, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if backend_answers(base_url, api_kind, timeout_s=min(PROBE_TIMEOUT_S, remaining)):
            return True
        # Backoff: a quick comeback is noticed quickly, a slow model load is not hammered.
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 5.0)


def command_program_report(command: str) -> dict[str, Any]:
    """Whether the program a restart command starts with is on this host and executable:
    `systemctl restart ollama` → systemctl found on PATH. Leading VAR=value words are
    skipped, as the shell does."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        return {
            "program": command,
            "path": None,
            "found": False,
            "executable": False,
            "error": f"cannot parse the command: {exc}",
        }
    program = next((w for w in words if not _is_assignment(w)), "")
    path = program if "/" in program else shutil.which(program) or ""
    found = bool(program) and os.path.isfile(path)
    return {
        "program": program,
        "path": path or None,
        "found": found,
        "executable": found and os.access(path, os.X_OK),
    }


def _is_assignment(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and name.isidentifier()


def run_command(command: str, *, timeout_s: float) -> tuple[int | None, str, str]:
    """(exit status or None, last ~2 KB of stdout+stderr, error) of a shell command.

    Output goes to a file, not a pipe: a restart command that starts the server in the
    background (`nohup ollama serve &`) leaves it holding the pipe open, and reading a pipe
    would wait for the server to exit. The command runs in its own session, so the backend
    it starts outlives this worker, and a timed-out command is killed with its children.
    """
    with tempfile.TemporaryFile() as out:
        try:
            # shell=True on purpose: the command is an admin-configured shell line
            # ("systemctl restart ollama", "docker restart vllm && sleep 1").
            proc = subprocess.Popen(  # noqa: S602
                command,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return None, "", f"could not start the restart command: {exc}"
        error = ""
        try:
            status: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # all of it exited meanwhile
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
            error = f"the restart command did not finish within {timeout_s:g} s and was killed"
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - OUTPUT_TAIL_BYTES))
        output = out.read().decode(errors="replace")
    return status, output, error


def _restart_result(
    was_up: bool,
    *,
    ok: bool = False,
    exit_status: int | None = None,
    output: str = "",
    recovered_after_s: float | None = None,
    error: str = "",
) -> RestartResult:
    return {
        "ok": ok,
        "was_up": was_up,
        "exit_status": exit_status,
        "output": output,
        "recovered_after_s": recovered_after_s,
        "error": error,
    }


_WARM_FIELDS = {f.name for f in fields(WarmTarget)}


async def _warm_all(targets: list[dict[str, Any]]) -> list[WarmOutcome]:
    timeout = httpx.Timeout(settings.CLAWDBOT_WARMUP_TIMEOUT_S, connect=3.0)
    outcomes: list[WarmOutcome] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        for raw in targets:
            model = str(raw.get("upstream_model", ""))
            missing = sorted(_WARM_FIELDS - raw.keys())
            if missing:
                outcomes.append(_warm_outcome(model, error=f"missing fields: {', '.join(missing)}"))
                continue
            target = WarmTarget(**{name: raw[name] for name in _WARM_FIELDS})
            result = await warm(client, target)
            outcomes.append(
                _warm_outcome(
                    model,
                    ok=result.ok,
                    load_ms=result.load_ms,
                    prompt_ms=result.prompt_ms,
                    error=result.error,
                )
            )
    return outcomes


def _warm_outcome(
    model: str,
    *,
    ok: bool = False,
    load_ms: int | None = None,
    prompt_ms: int | None = None,
    error: str = "",
) -> WarmOutcome:
    return {"model": model, "ok": ok, "load_ms": load_ms, "prompt_ms": prompt_ms, "error": error}
