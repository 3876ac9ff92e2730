"""A node's routing weight (its capacity in the balancer): the seed's formula.

base score by GPU type × load factor (1 − util × 0.6) × thermal factor
(max(0.3, 1 − (temp − 65) / 30)) × health (0.8 × pass ratio + 0.2); at ≥ 85 °C the weight is
at most 30 % of base. A node without telemetry gets neutral load and thermal factors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Relative decode capacity per GPU; A10/A100/H100 are the seed's, the rest placed by the
# same yardstick (memory bandwidth and tensor throughput relative to an A10).
BASE_SCORES: Mapping[str, float] = {
    "A10": 100.0,
    "A100": 220.0,
    "H100": 380.0,
    "H200": 430.0,
    "L40S": 180.0,
    "RTX4090": 160.0,
    "other": 100.0,
}
HOT_CELSIUS = 85.0
HOT_CAP = 0.3


@dataclass(frozen=True, slots=True)
class Telemetry:
    utilisation: float  # 0..1, mean over the node's GPUs
    temperature_c: float  # hottest GPU


def base_score(
    gpu_type: str, gpu_count: int = 1, table: Mapping[str, float] = BASE_SCORES
) -> float:
    return table.get(gpu_type, table.get("other", 100.0)) * max(1, gpu_count)


def load_factor(utilisation: float) -> float:
    return 1.0 - min(max(utilisation, 0.0), 1.0) * 0.6


def thermal_factor(temperature_c: float) -> float:
    return max(0.3, min(1.0, 1.0 - (temperature_c - 65.0) / 30.0))


def health_factor(pass_ratio: float) -> float:
    return 0.8 * min(max(pass_ratio, 0.0), 1.0) + 0.2


def weight_parts(
    gpu_type: str,
    *,
    gpu_count: int = 1,
    telemetry: Telemetry | None = None,
    pass_ratio: float = 1.0,
    table: Mapping[str, float] = BASE_SCORES,
) -> tuple[float, float, float]:
    """The weight's factors, for routing by expected completion time: the GPU-type score,
    health × thermal (with the hot cap), and the utilisation factor."""
    base = base_score(gpu_type, gpu_count, table)
    live = health_factor(pass_ratio)
    busy = 1.0
    if telemetry is not None:
        live *= thermal_factor(telemetry.temperature_c)
        if telemetry.temperature_c >= HOT_CELSIUS:
            live = min(live, HOT_CAP)
        busy = load_factor(telemetry.utilisation)
    return base, live, busy


def node_weight(
    gpu_type: str,
    *,
    gpu_count: int = 1,
    telemetry: Telemetry | None = None,
    pass_ratio: float = 1.0,
    table: Mapping[str, float] = BASE_SCORES,
) -> float:
    base = base_score(gpu_type, gpu_count, table)
    weight = base * health_factor(pass_ratio)
    if telemetry is not None:
        weight *= load_factor(telemetry.utilisation) * thermal_factor(telemetry.temperature_c)
        if telemetry.temperature_c >= HOT_CELSIUS:
            weight = min(weight, base * HOT_CAP)
    return round(weight, 3)
