"""deploy/prometheus: the rules' structure and the series they read, checked in Python
everywhere; `promtool check` and `promtool test rules` (alerts_test.yml) where promtool is
installed (Debian's `prometheus` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodes.choices import NodeState
from tests.deploy.kit import (
    DEPLOY,
    FUTURE_METRICS,
    PROMETHEUS_OWN,
    exported_metrics,
    have,
    metric_names,
)

RULES = DEPLOY / "prometheus" / "clawdbot-alerts.yml"
REQUIRED = {
    "ClawdbotNodeDown",
    "ClawdbotDegradationTier",
    "ClawdbotQueueSaturation",
    "ClawdbotTimeToFirstTokenP95High",
    "ClawdbotRequestDurationP95High",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}, group.get("name")
        found.extend(group["rules"])
    return found


def test_every_rule_is_a_complete_alert() -> None:
    names = []
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"].startswith("Clawdbot"), rule
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        names.append(rule["alert"])
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED


def test_rules_read_only_series_the_gateway_exports() -> None:
    known = exported_metrics() | FUTURE_METRICS | PROMETHEUS_OWN
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= known, f"{rule['alert']}: {sorted(used - known)} not exported"


def test_node_states_named_in_rules_exist() -> None:
    for rule in rules():
        for state in re.findall(r'state="([A-Z]+)"', rule["expr"]):
            assert state in NodeState.values, rule["alert"]


def test_series_are_never_summed_across_gateway_processes() -> None:
    # Every process reports the cluster's numbers: a sum over instances counts them N times.
    for rule in rules():
        expr = rule["expr"]
        if "clawdbot_" in expr and "sum" in expr:
            assert "max without (instance)" in expr, rule["alert"]


def test_prometheus_scrapes_every_compose_gateway_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == [RULES.name]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "clawdbot-gateway"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    gateways = {f"{name}:8000" for name in compose["services"] if name.startswith("gateway-")}
    assert set(job["static_configs"][0]["targets"]) == gateways


@pytest.mark.slow
def test_promtool_checks_config_and_rules_and_the_alerts_fire(tmp_path: Path) -> None:
    promtool = have("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: checked in Python only")
    for name in ("prometheus.yml", RULES.name):
        shutil.copy(DEPLOY / "prometheus" / name, tmp_path / name)
    shutil.copy(Path(__file__).parent / "alerts_test.yml", tmp_path / "alerts_test.yml")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", RULES.name],
        ["test", "rules", "alerts_test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
