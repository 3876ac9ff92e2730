"""`make run` (clawdbot_site/devrun.py): the gateway's line in the Procfile it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawdbot_site import devrun, supervisor
from clawdbot_site.env import ConfigError


def test_web_workers_default_to_one_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAWDBOT_WEB_WORKERS", raising=False)
    assert devrun.web_workers() == supervisor.available_cpus()
    monkeypatch.setenv("CLAWDBOT_WEB_WORKERS", "3")
    assert devrun.web_workers() == 3


def test_a_bad_web_workers_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWDBOT_WEB_WORKERS", "lots")
    with pytest.raises(ConfigError, match="CLAWDBOT_WEB_WORKERS must be a number"):
        devrun.web_workers()


def test_the_procfile_serves_the_port_with_that_many_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(devrun, "VAR_DIR", tmp_path)
    lines = devrun._procfile(with_sim=False, workers=2).read_text().splitlines()
    web = next(line for line in lines if line.startswith("web: "))
    assert web.endswith(f"clawdbot serve --port {devrun.PORT} --workers 2")


def test_the_demo_node_replays_the_h200_recording_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CLAWDBOT_DEMO_GPUS", raising=False)
    recording = devrun.demo_gpus()
    assert recording is not None and recording.name == "h200.jsonl" and recording.is_file()
    monkeypatch.setenv("CLAWDBOT_DEMO_GPUS", "static")
    assert devrun.demo_gpus() is None
    own = tmp_path / "mine.jsonl"
    own.write_text("")
    monkeypatch.setenv("CLAWDBOT_DEMO_GPUS", str(own))
    assert devrun.demo_gpus() == own


def test_an_unknown_demo_recording_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAWDBOT_DEMO_GPUS", "b200")
    with pytest.raises(ConfigError, match=r"CLAWDBOT_DEMO_GPUS='b200'.*use one of h200, static"):
        devrun.demo_gpus()
