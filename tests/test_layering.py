"""The layout's rules, checked on every import statement (late imports inside functions too):
the control plane never imports the data plane, our wire-protocol engines, the simulator and
the load generator stand alone. A wrong-way import fails here, naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = (
    "clawdbot_site",
    "gateway",
    "nodes",
    "admin_api",
    "alerts",
    "configfile",
    "dashboard",
    "simulator",
    "wire",
    "loadgen",
    "readiness",
)

# package → the top-level packages it must never import
FORBIDDEN = {
    "nodes": {"gateway", "admin_api", "dashboard", "readiness"},
    "gateway": {"admin_api", "dashboard", "configfile", "readiness"},
    # On top of both planes, beside the management API (which serves its runs).
    "readiness": {"admin_api", "dashboard", "configfile"},
    # Both planes raise alerts; the alerts app knows neither.
    "alerts": {"gateway", "nodes", "admin_api", "configfile", "dashboard"},
    "wire": {*PROJECT, "django", "rest_framework", "channels", "celery"} - {"wire"},
    "simulator": {*PROJECT, "django", "rest_framework", "channels", "celery"} - {"simulator"},
    # A client tool: runs from any machine that can reach the gateway.
    "loadgen": {*PROJECT, "django", "rest_framework", "channels", "celery"} - {"loadgen"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_wrong_way_imports(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imports(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert wrong == []


def test_the_check_sees_late_imports() -> None:
    source = ROOT / "var" / "layering_probe.py"
    source.parent.mkdir(exist_ok=True)
    source.write_text("def f():\n    from gateway.errors import GatewayError\n")
    try:
        assert imports(source) == [(2, "gateway.errors")]
    finally:
        source.unlink()
