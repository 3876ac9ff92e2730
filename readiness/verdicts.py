"""What each check's findings mean: pass, fail or skip, with a reason an operator can act on.
Pure functions over plain data, so every way a check can fail is tested without I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, SKIP = "pass", "fail", "skip"
LARGE_GPU_GB = 40.0  # "40 GB and up" cards get the tighter latency threshold


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def passed(reason: str, **details: Any) -> Verdict:
    return Verdict(PASS, reason, details)


def failed(reason: str, **details: Any) -> Verdict:
    return Verdict(FAIL, reason, details)


def skipped(reason: str, **details: Any) -> Verdict:
    return Verdict(SKIP, reason, details)


def from_problems(problems: Sequence[str], ok: str, **details: Any) -> Verdict:
    """Fail naming every problem (the first few in the reason), or pass with `ok`."""
    if not problems:
        return passed(ok, **details)
    shown = "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )
    return failed(shown, problems=list(problems), **details)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile by the nearest-rank method (no interpolation: a value that was
    really observed)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def nodes_ready(states: Mapping[str, str]) -> Verdict:
    if not states:
        return failed("no enabled node: add one with `clawdbot onboard`")
    problems = [f"{name} is {state}" for name, state in sorted(states.items()) if state != "READY"]
    return from_problems(problems, f"{len(states)} node(s) READY")


def gpu_memory(readings: Mapping[str, Mapping[str, Any] | None], max_pct: float) -> Verdict:
    """Every GPU of every node with telemetry at or under `max_pct` % memory used."""
    problems: list[str] = []
    measured: dict[str, list[float]] = {}
    for node, reading in sorted(readings.items()):
        if not reading or not reading.get("nvml"):
            continue
        for index, gpu in enumerate(reading.get("gpus") or []):
            used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
            if used is None or not total:
                continue
            pct = 100.0 * float(used) / float(total)
            measured.setdefault(node, []).append(round(pct, 1))
            if pct > max_pct:
                problems.append(
                    f"{node} GPU {gpu.get('index', index)} uses {pct:.0f} % of its memory "
                    f"(limit {max_pct:g} %)"
                )
    if not measured:
        return skipped("no node reports GPU telemetry (run `clawdbot agent` on GPU hosts)")
    return from_problems(
        problems,
        f"{sum(len(v) for v in measured.values())} GPU(s) under {max_pct:g} %",
        used_pct=measured,
    )


@dataclass(frozen=True)
class ServedWindow:
    node: str
    api_kind: str
    model_id: str
    profile_window: int
    served: int | None  # what the upstream says it serves; None when it does not say


def context_windows(findings: Sequence[ServedWindow]) -> Verdict:
    """vLLM-style servers fix the window at start (max_model_len): it must equal the
    profile's, or prompts the gateway lets through are refused by the node (window too big)
    or capacity is wasted (too small). Ollama applies num_ctx per request, up to the model's
    trained length: that length must be at least the profile's window."""
    if not findings:
        return skipped("no deployment to compare")
    problems = []
    unknown = []
    for f in findings:
        if f.served is None:
            unknown.append(f"{f.model_id} on {f.node}")
        elif f.api_kind == "ollama" and f.served < f.profile_window:
            problems.append(
                f"{f.model_id} on {f.node}: the profile's window is {f.profile_window} tokens "
                f"but the model supports {f.served}"
            )
        elif f.api_kind != "ollama" and f.served != f.profile_window:
            problems.append(
                f"{f.model_id} on {f.node}: the profile's window is {f.profile_window} tokens "
                f"but the server serves {f.served} (max_model_len)"
            )
    # A server that never says its window (llama-cpp-python, most generic OpenAI-compatible
    # servers) was given one at onboarding (--context-window): it cannot be checked, and
    # failing for it would keep such a cluster out of production for good. Said, not failed.
    ok = f"{len(findings) - len(unknown)} deployment(s) match"
    if unknown:
        ok += (
            "; not checkable, the server does not say its window (the profile's is enforced): "
            + ", ".join(unknown)
        )
    return from_problems(problems, ok)


def self_heal(
    commands: Mapping[str, str], reports: Mapping[str, Mapping[str, Any] | None]
) -> Verdict:
    """`commands`: node → restart command (nodes without one are left out); `reports`:
    node → what its agent found for the command's program, None when no agent reports."""
    if not commands:
        return skipped("no node has a restart command")
    problems = []
    for node in sorted(commands):
        report = reports.get(node)
        if report is None:
            problems.append(
                f"{node}: no report from its agent (is `clawdbot agent --node {node}` running, "
                "and up to date?)"
            )
        elif not report.get("found"):
            problems.append(f"{node}: {report.get('program')!r} is not found on the GPU host")
        elif not report.get("executable"):
            problems.append(f"{node}: {report.get('path')!r} is not executable")
    return from_problems(problems, f"{len(commands)} restart command(s) found and executable")


def error_rate(total: int, errors: Mapping[str, int], max_rate: float) -> Verdict:
    if total == 0:
        return failed("no request was sent")
    failures = sum(errors.values())
    rate = failures / total
    by_status = ", ".join(f"{count} × {status}" for status, count in sorted(errors.items()))
    summary = f"{failures}/{total} failed ({rate:.1%}, limit {max_rate:.1%})"
    if rate >= max_rate and failures:
        return failed(f"{summary}: {by_status}", error_rate=rate, errors=dict(errors))
    return passed(summary, error_rate=rate)


def share_out(total: int, models: Sequence[str]) -> dict[str, int]:
    """`total` requests between the models, as evenly as can be (the first get one more);
    a model left with none is left out."""
    base, extra = divmod(total, len(models)) if models else (0, 0)
    shares = {m: base + (1 if i < extra else 0) for i, m in enumerate(models)}
    return {m: n for m, n in shares.items() if n > 0}


def capacity_hint(capacity: Mapping[str, int], sent: Mapping[str, int]) -> str:
    """Why a burst was refused when the nodes cannot hold it: they answer 503 past their
    running and queued requests, as they should."""
    short = {m: c for m, c in sorted(capacity.items()) if c < sent.get(m, 0)}
    if not short:
        return ""
    detail = ", ".join(f"{m} {sent[m]} sent, {c} admitted" for m, c in short.items())
    return (
        f". The burst was more than the nodes admit at once (max concurrent + queue size): "
        f"{detail}. Add nodes or raise their limits, or size the smoke load to the cluster "
        "with CLAWDBOT_READY_SMOKE_REQUESTS"
    )


def latency_p95(
    latencies_s: Mapping[str, Sequence[float]],
    memory_gb: Mapping[str, float],
    small_gpu_s: float,
    large_gpu_s: float,
) -> Verdict:
    """Per node: p95 under the threshold of its GPU class (by memory per GPU)."""
    if not latencies_s:
        return failed("no successful request to measure (see the smoke load)")
    problems = []
    p95s = {}
    for node, values in sorted(latencies_s.items()):
        limit = large_gpu_s if memory_gb.get(node, 0.0) >= LARGE_GPU_GB else small_gpu_s
        p95 = percentile(values, 95)
        p95s[node] = round(p95, 3)
        if p95 >= limit:
            problems.append(f"{node}: p95 {p95:.2f} s over {limit:g} s ({len(values)} requests)")
    return from_problems(
        problems, "p95 " + ", ".join(f"{n} {v:.2f} s" for n, v in p95s.items()), p95_s=p95s
    )
