"""What the deployment kit's tests check against: the kit's files, the metric names the
gateway exports, the environment variables the code reads, and the commands it accepts."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

from django.core.management import get_commands, load_command_class

from gateway import metrics

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
PACKAGES = ("clawdbot_site", "gateway", "nodes", "admin_api", "alerts", "configfile", "dashboard")
# Metrics the kit may read before the gateway exports them (none now).
FUTURE_METRICS: set[str] = set()
# Prometheus's own series about its scrapes.
PROMETHEUS_OWN = {"up"}


def exported_metrics() -> set[str]:
    """Every sample name /metrics can show, from the gateway's own renderer: one node and one
    model so that every family has a sample."""
    node = SimpleNamespace(name="gpu1", state="READY", routable=True, weight=1.0)
    data = {
        "requests": {b"m\x1fgpu1\x1f200": b"1"},
        "tokens": {b"m\x1fprompt": b"1"},
        "duration": {"m": {b"0.5": b"1", b"sum": b"0.4"}},
        "ttft": {"m": {b"0.5": b"1", b"sum": b"0.4"}},
        "load": {"gpu1": (1, 0)},
        "ejected": set(),
        "nodes": [node],
        "telemetry": {
            "gpu1": {
                "nvml": True,
                "gpus": [
                    {
                        "index": 0,
                        "name": "NVIDIA H200",
                        "utilisation_gpu_pct": 50,
                        "memory_used_mib": 1024,
                        "memory_total_mib": 143771,
                        "temperature_c": 50,
                        "power_draw_w": 300.0,
                        "power_limit_w": 700.0,
                    }
                ],
            }
        },
        "version": 1,
        "log_rejected": 0,
        "log_backlog": 0,
        "tier": 0,
        "error_rate": 0.0,
    }
    text = metrics.render(data).decode()
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def metric_names(expr: str) -> set[str]:
    """The clawdbot_* series an expression reads (and `up`, Prometheus's own)."""
    names = set(re.findall(r"\bclawdbot_[a-z_]+\b", expr))
    if re.search(r"\bup\s*\{", expr):
        names.add("up")
    return names


def environment_variables_read() -> set[str]:
    """The names the code reads from the environment: settings.py and the few modules that
    read their own (the agent's CLAWDBOT_FAKE_NVML), by their quoted names."""
    quoted = re.compile(r"[\"'](CLAWDBOT_[A-Z_]+|DATABASE_URL|REDIS_URL)[\"']")
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found |= set(quoted.findall(path.read_text()))
    return found


def check_command(argv: list[str]) -> None:
    """Fail unless argv is a command line the kit may run: a `clawdbot` subcommand whose own
    parser accepts the arguments, or the Celery worker or beat of this project's app."""
    program = Path(argv[0]).name
    if program == "clawdbot":
        name = argv[1].replace("-", "_")
        commands = get_commands()
        assert name in commands, f"`clawdbot {argv[1]}` is not a command"
        command = load_command_class(commands[name], name)
        # parse_args exits (SystemExit) on an unknown or malformed argument.
        command.create_parser("clawdbot", name).parse_args(argv[2:])
    elif program == "celery":
        assert argv[1:3] == ["-A", "clawdbot_site"], argv
        assert argv[3] in ("worker", "beat"), argv
        if argv[3] == "beat":
            assert "--schedule" in argv, "beat keeps its schedule in the state directory"
    else:
        raise AssertionError(f"unexpected program {argv[0]}")


def split_command(line: str, instance: str = "8001") -> list[str]:
    return shlex.split(line.replace("%i", instance))


def have(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
