"""Every package of the project is installed: an app missing from pyproject's package list
imports only from the repository root, and `clawdbot` started anywhere else (a GPU host's
agent, a wheel install) fails at start-up."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
NOT_INSTALLED = {"tests", "bench"}  # run from a checkout only


def included() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["setuptools"]["packages"]["find"]["include"])


def test_every_top_level_package_is_in_the_package_list() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_INSTALLED
    missing = {p for p in packages if not any(fnmatch(p, pattern) for pattern in included())}
    assert missing == set()


def test_every_project_app_is_a_listed_package() -> None:
    ours = {app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()}
    assert ours and all(any(fnmatch(app, p) for p in included()) for app in ours)
