from __future__ import annotations

import pytest

from nodes.weights import Telemetry, load_factor, node_weight, thermal_factor


def test_base_scores_follow_the_seed() -> None:
    assert node_weight("A10") == 100
    assert node_weight("A100") == 220
    assert node_weight("H100") == 380
    assert node_weight("mystery") == 100
    assert node_weight("A100", gpu_count=2) == 440


def test_load_and_thermal_factors() -> None:
    assert load_factor(0.5) == pytest.approx(0.7)
    assert thermal_factor(50) == 1.0
    assert thermal_factor(80) == pytest.approx(0.5)
    assert thermal_factor(200) == 0.3


def test_telemetry_changes_the_weight_as_the_formula_says() -> None:
    w = node_weight("H100", telemetry=Telemetry(utilisation=0.5, temperature_c=71))
    assert w == pytest.approx(380 * 0.7 * 0.8)


def test_hot_gpu_is_capped_at_thirty_percent_of_base() -> None:
    cool_idle = node_weight("A100", telemetry=Telemetry(0.0, 84.9))
    hot_idle = node_weight("A100", telemetry=Telemetry(0.0, 85.0))
    assert hot_idle <= 220 * 0.3 < cool_idle


def test_health_ratio() -> None:
    assert node_weight("A10", pass_ratio=0.5) == pytest.approx(60)
    assert node_weight("A10", pass_ratio=0.0) == pytest.approx(20)
