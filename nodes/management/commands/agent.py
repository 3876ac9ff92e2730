from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from clawdbot_site.celery import app
from nodes import telemetry, telemetry_store
from nodes.agent import queue_for
from nodes.models import Node, validate_node_name

log = logging.getLogger(__name__)
DB_CHECK_TIMEOUT_S = 5.0
# A third of the heartbeat's TTL: two refreshes may be lost before the agent reads as dead.
HEARTBEAT_EVERY_S = telemetry_store.HEARTBEAT_TTL_S / 3


class Command(BaseCommand):
    help = (
        "Run the node agent on a GPU host: a Celery worker consuming only the queue "
        "node.NAME, reporting GPU telemetry (NVML), restarting the backend and warming models."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", required=True, help="the node's name, e.g. gpu1")
        parser.add_argument("--concurrency", type=int, default=1, help="tasks run at once")
        parser.add_argument(
            "--loglevel",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
            type=str.upper,
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["node"]
        try:
            validate_node_name(name)
        except ValidationError as exc:
            raise CommandError(f"--node {name!r}: {' '.join(exc.messages)}") from None
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        queue = queue_for(name)
        self.stdout.write(f"Clawdbot node agent for {name}: queue {queue}; NVML {nvml_status()}")
        self.stdout.flush()

        exists, problem = node_in_database(name)
        if exists is None:
            self.stderr.write(
                f"warning: cannot read the database ({problem}), so not checking that "
                f"node {name} is configured. The agent needs only Redis."
            )
        elif not exists:
            raise CommandError(
                f"there is no node named {name!r} in the database: onboard it first "
                f"(clawdbot onboard --name {name} …) or check the name"
            )

        try:
            telemetry_store.heartbeat(name)
        except redis.RedisError as exc:
            raise CommandError(f"Redis at {settings.REDIS_URL} is not reachable: {exc}") from None
        stop = threading.Event()
        beats = threading.Thread(
            target=_keep_beating, args=(name, stop), name="agent-heartbeat", daemon=True
        )
        beats.start()
        try:
            app.worker_main(
                [
                    "worker",
                    "--queues",
                    queue,
                    "--hostname",
                    f"agent-{name}@%h",
                    "--concurrency",
                    str(options["concurrency"]),
                    "--loglevel",
                    options["loglevel"],
                    # Celery autodiscovers `tasks` modules only.
                    "--include",
                    "nodes.agent",
                    # Agents need no knowledge of other workers: skip the start-up chatter.
                    "--without-gossip",
                    "--without-mingle",
                ]
            )
        finally:
            stop.set()
            beats.join(timeout=5)
            try:
                telemetry_store.forget_agent(name)
            except redis.RedisError:
                pass  # the heartbeat expires on its own


def nvml_status() -> str:
    """ "real: 1 GPU (NVIDIA H200), driver …", "fake, from CLAWDBOT_FAKE_NVML=…: …" or
    "unavailable: no NVML: …" — what the operator needs to know before the first reading."""
    nvml, source = telemetry.nvml_from_env()
    if nvml is None:
        return source
    reading = telemetry.read(nvml)
    if not reading["nvml"]:
        return f"unavailable: {reading['error']}"
    return f"{source}: {telemetry.describe(reading)}"


def node_in_database(name: str) -> tuple[bool | None, str]:
    """(whether the node is configured, or None when the database cannot say; why not).

    Runs in a thread with a deadline: an unreachable PostgreSQL can hang a connect for
    minutes, and a GPU host may legitimately have no database at all.
    """
    result: dict[str, Any] = {}

    def check() -> None:
        try:
            result["exists"] = Node.objects.filter(name=name).exists()
        except DatabaseError as exc:
            result["problem"] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=check, name="agent-db-check", daemon=True)
    thread.start()
    thread.join(DB_CHECK_TIMEOUT_S)
    if "exists" in result:
        return bool(result["exists"]), ""
    return None, result.get("problem", f"no answer within {DB_CHECK_TIMEOUT_S:g} s")


def _keep_beating(name: str, stop: threading.Event) -> None:
    # The control plane sends telemetry tasks only to nodes with a live agent, so the agent
    # must keep its heartbeat itself rather than rely on those tasks.
    while not stop.wait(HEARTBEAT_EVERY_S):
        try:
            telemetry_store.heartbeat(name)
        except redis.RedisError as exc:
            # Redis may come back; the worker reconnects on its own and so does this loop.
            log.warning("agent heartbeat for %s failed: %s", name, exc)
