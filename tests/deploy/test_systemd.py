"""deploy/systemd: each unit parsed as INI, its ExecStart checked against the command it
runs (the `clawdbot` subcommand's own argument parser, or this project's Celery app), and
`systemd-analyze verify` on copies pointed at this checkout's venv where systemd is there."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from tests.deploy.kit import DEPLOY, ROOT, check_command, have, split_command

UNITS = DEPLOY / "systemd"
SERVICES = sorted(UNITS.glob("*.service"))
VENV_BIN = "/opt/clawdbot/venv/bin/"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_the_four_processes_have_units() -> None:
    assert {p.name for p in SERVICES} == {
        "clawdbot-gateway@.service",
        "clawdbot-worker.service",
        "clawdbot-beat.service",
        "clawdbot-agent@.service",
    }


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_service_runs_a_real_command_as_clawdbot_with_the_environment_file(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["User"] == "clawdbot"
    assert service["EnvironmentFile"] == "/etc/clawdbot/clawdbot.env"
    assert service["Restart"] == "always"
    argv = split_command(service["ExecStart"], instance="gpu1" if "agent" in path.name else "8001")
    assert argv[0].startswith(VENV_BIN)
    check_command(argv)


def test_gateway_instances_are_the_ports_nginx_proxies_to() -> None:
    argv = split_command(unit(UNITS / "clawdbot-gateway@.service")["Service"]["ExecStart"])
    assert argv[argv.index("--port") + 1] == "8001" and "--production" in argv
    upstreams = (DEPLOY / "nginx" / "gateways.conf").read_text()
    assert "server 127.0.0.1:8001;" in upstreams and "server 127.0.0.1:8002;" in upstreams


@pytest.mark.slow
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = have("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: units checked as INI only")
    for path in [*SERVICES, UNITS / "clawdbot.target"]:
        # Templates are verified as an instance; the executables as this checkout's venv;
        # the user as one that exists here.
        name = path.name.replace("@.", "@8001.")
        text = path.read_text().replace(VENV_BIN, f"{ROOT / '.venv' / 'bin'}/")
        text = text.replace("User=clawdbot", "User=root").replace("Group=clawdbot", "Group=root")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    # Unknown keys are only warned about (exit 0): any output at all is a failure here.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
