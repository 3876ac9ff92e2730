from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clawdbot_site.env import ConfigError, env_bool, env_choice, env_float, env_int

ROOT = Path(__file__).resolve().parent.parent


def test_env_bool_is_strict() -> None:
    assert env_bool("X", False, {"X": "yes"}) is True
    assert env_bool("X", True, {"X": "0"}) is False
    assert env_bool("X", True, {}) is True
    with pytest.raises(ConfigError, match="X must be true or false"):
        env_bool("X", False, {"X": "maybe"})


def test_env_numbers_name_the_variable() -> None:
    assert env_int("N", 3, environ={"N": "7"}) == 7
    with pytest.raises(ConfigError, match="N must be an integer, got 'seven'"):
        env_int("N", 3, environ={"N": "seven"})
    with pytest.raises(ConfigError, match="N must be at least 1"):
        env_int("N", 3, minimum=1, environ={"N": "0"})
    with pytest.raises(ConfigError, match="F must be a number"):
        env_float("F", 1.0, environ={"F": "fast"})


def test_env_choice() -> None:
    with pytest.raises(ConfigError, match="M must be one of development, production"):
        env_choice("M", "development", ("development", "production"), {"M": "prod"})


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAWDBOT_")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # a real process
def test_production_without_secret_key_refuses_to_start() -> None:
    result = _check({"CLAWDBOT_MODE": "production"})
    assert result.returncode != 0
    assert "CLAWDBOT_SECRET_KEY must be set when CLAWDBOT_MODE=production" in result.stderr
    example = (ROOT / "deploy" / "clawdbot.env.example").read_text()
    placeholder = example.split("CLAWDBOT_SECRET_KEY=", 1)[1].split("\n", 1)[0]
    result = _check({"CLAWDBOT_MODE": "production", "CLAWDBOT_SECRET_KEY": placeholder})
    assert result.returncode != 0 and "still the example's placeholder" in result.stderr


@pytest.mark.slow  # a real process
def test_bad_database_url_and_redis_url_are_named() -> None:
    result = _check({"REDIS_URL": "http://localhost:6379"})
    assert result.returncode != 0 and "REDIS_URL must start with" in result.stderr
    result = _check({"CLAWDBOT_DEBUG": "sometimes"})
    assert "CLAWDBOT_DEBUG must be true or false" in result.stderr


@pytest.mark.slow  # a real process
def test_console_script_is_manage_py() -> None:
    script = Path(sys.executable).parent / "clawdbot"
    result = subprocess.run(
        [str(script), "help", "apikey"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "create|list|revoke" in result.stdout
    dashed = subprocess.run(
        [str(script), "simulate-node", "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert dashed.returncode == 0, dashed.stderr
    assert "--api" in dashed.stdout


def test_gpu_scores_merge_over_the_defaults() -> None:
    from clawdbot_site.env import env_scores

    merged = env_scores("S", {"A10": 100.0, "H200": 430.0}, {"S": "H200=500, B200=900"})
    assert merged == {"A10": 100.0, "H200": 500.0, "B200": 900.0}
    with pytest.raises(ConfigError, match="S must look like 'H200=430,L40S=180'"):
        env_scores("S", {}, {"S": "H200:500"})
    with pytest.raises(ConfigError):
        env_scores("S", {}, {"S": "H200=-1"})
