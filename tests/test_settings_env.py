from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clawdbot_site.env import (
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_names_map,
)

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
def test_tier_thresholds_must_rise_and_leave_room_for_the_margin() -> None:
    result = _check({"CLAWDBOT_TIER_2_AT": "0.04"})
    assert result.returncode != 0 and "that must rise: 0 < tier 1 < tier 2" in result.stderr
    result = _check({"CLAWDBOT_TIER_MARGIN": "0.05"})
    assert result.returncode != 0 and "CLAWDBOT_TIER_MARGIN (0.05) must be below" in result.stderr
    result = _check({"CLAWDBOT_CACHE_SHARED": "maybe"})
    assert "CLAWDBOT_CACHE_SHARED must be true or false" in result.stderr


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


def test_env_lists_and_name_maps() -> None:
    assert env_list("L", ("*",), {}) == ("*",)
    assert env_list("L", (), {"L": " a, b ,,c "}) == ("a", "b", "c")
    assert env_names_map("M", {"M": '{"ml": ["a", "b"], "all": ["*"]}'}) == {
        "ml": ("a", "b"),
        "all": ("*",),
    }
    assert env_names_map("M", {}) == {}
    for bad in ("ml=a", '["a"]', '{"ml": "a"}', '{"ml": [1]}', '{"ml": [""]}'):
        with pytest.raises(ConfigError, match="M must be a JSON object of lists of names"):
            env_names_map("M", {"M": bad})


SSO = {"CLAWDBOT_JWT_SECRET": "s" * 32}
IDP = {
    "CLAWDBOT_JWT_JWKS_URL": "https://idp.example.com/jwks",
    "CLAWDBOT_JWT_ISSUER": "https://idp.example.com/",
    "CLAWDBOT_JWT_AUDIENCE": "clawdbot",
}


@pytest.mark.slow  # a real process per case
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAWDBOT_JWT_ISSUER": "x"}, "CLAWDBOT_JWT_ISSUER is set, but single sign-on is off"),
        ({"CLAWDBOT_JWT_SECRET": "short"}, "CLAWDBOT_JWT_SECRET must be at least 32 characters"),
        (
            {**SSO, "CLAWDBOT_JWT_ALGORITHMS": "HS256,none"},
            "CLAWDBOT_JWT_ALGORITHMS: 'none' is not accepted",
        ),
        (
            {**SSO, "CLAWDBOT_JWT_ALGORITHMS": "RS256"},
            "CLAWDBOT_JWT_ALGORITHMS lists RS256, which needs CLAWDBOT_JWT_JWKS_URL",
        ),
        (
            {**SSO, "CLAWDBOT_JWT_ALGORITHMS": "HS512"},
            "CLAWDBOT_JWT_SECRET must be at least 64 bytes long for HS512",
        ),
        (
            {**IDP, "CLAWDBOT_JWT_JWKS_URL": "http://idp.example.com/jwks"},
            "CLAWDBOT_JWT_JWKS_URL must be an https:// URL",
        ),
        (
            {"CLAWDBOT_JWT_JWKS_URL": "https://idp.example.com/jwks"},
            "CLAWDBOT_JWT_JWKS_URL needs CLAWDBOT_JWT_ISSUER and CLAWDBOT_JWT_AUDIENCE",
        ),
        ({**SSO, "CLAWDBOT_JWT_GROUP_MODELS": "ml=a"}, "CLAWDBOT_JWT_GROUP_MODELS must be"),
    ],
)
def test_single_sign_on_settings_refuse_to_start_when_wrong(
    env: dict[str, str], message: str
) -> None:
    result = _check(env)
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.slow  # a real process
def test_single_sign_on_settings_that_start() -> None:
    result = _check({**SSO, **IDP, "CLAWDBOT_JWT_DEFAULT_MODELS": "none"})
    assert result.returncode == 0, result.stderr
