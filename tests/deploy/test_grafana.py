"""deploy/grafana: the dashboard is JSON Grafana can import, and its panels read only series
the gateway exports. (Grafana itself is not run here.)"""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.deploy.kit import DEPLOY, FUTURE_METRICS, PROMETHEUS_OWN, exported_metrics, metric_names

DASHBOARD = DEPLOY / "grafana" / "clawdbot-dashboard.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def test_dashboard_has_identity_and_panels_in_a_grid() -> None:
    board = dashboard()
    assert board["uid"] == "clawdbot" and board["title"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    # The panels' datasource is the variable the dashboard declares.
    (variable,) = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"


def test_panels_read_only_series_the_gateway_exports() -> None:
    known = exported_metrics() | FUTURE_METRICS | PROMETHEUS_OWN
    used: set[str] = set()
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, panel["title"]
            assert names <= known, f"{panel['title']}: {sorted(names - known)}"
            used |= names
    # Every family the gateway exports has a panel.
    families = {n.removesuffix("_bucket") for n in exported_metrics() if n.endswith("_bucket")}
    plain = {n for n in exported_metrics() if not n.endswith(("_bucket", "_sum", "_count"))}
    assert {f"{f}_bucket" for f in families} | plain <= used


def test_provisioning_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "clawdbot.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/{DASHBOARD.name}:{path}/clawdbot.json:ro" in mounts
