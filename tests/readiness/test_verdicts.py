"""Every verdict of the readiness checklist, passing and failing, on plain data."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nodes.agent import command_program_report
from readiness import verdicts
from readiness.verdicts import FAIL, PASS, SKIP, ServedWindow


def test_percentile_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert verdicts.percentile(values, 95) == 95.0
    assert verdicts.percentile([3.0], 95) == 3.0
    assert verdicts.percentile([1.0, 2.0], 50) == 1.0
    with pytest.raises(ValueError):
        verdicts.percentile([], 95)


def test_nodes_ready() -> None:
    assert verdicts.nodes_ready({"a": "READY", "b": "READY"}).status == PASS
    verdict = verdicts.nodes_ready({"a": "READY", "b": "DEGRADED", "c": "UNKNOWN"})
    assert verdict.status == FAIL
    assert "b is DEGRADED" in verdict.reason and "c is UNKNOWN" in verdict.reason
    assert verdicts.nodes_ready({}).status == FAIL


def gpu(used: int, total: int = 81920) -> dict[str, object]:
    return {"memory_used_mib": used, "memory_total_mib": total}


def test_gpu_memory() -> None:
    ok = {"a": {"nvml": True, "gpus": [gpu(40000), gpu(69000)]}}
    assert verdicts.gpu_memory(ok, 85).status == PASS
    full = {"a": {"nvml": True, "gpus": [gpu(40000), {"index": 1, **gpu(78000)}]}, "b": None}
    verdict = verdicts.gpu_memory(full, 85)
    assert verdict.status == FAIL and "a GPU 1 uses 95 %" in verdict.reason
    assert verdicts.gpu_memory({"a": None, "b": {"nvml": False}}, 85).status == SKIP


def test_context_windows() -> None:
    def window(kind: str, profile: int, served: int | None) -> ServedWindow:
        return ServedWindow("gpu1", kind, "qwen3-32b", profile, served)

    assert verdicts.context_windows([window("openai", 8192, 8192)]).status == PASS
    too_big = verdicts.context_windows([window("openai", 32768, 8192)])
    assert too_big.status == FAIL and "serves 8192" in too_big.reason
    assert verdicts.context_windows([window("openai", 4096, 8192)]).status == FAIL
    # Ollama applies num_ctx per request, up to the model's length.
    assert verdicts.context_windows([window("ollama", 8192, 40960)]).status == PASS
    ollama_short = verdicts.context_windows([window("ollama", 65536, 40960)])
    assert ollama_short.status == FAIL and "supports 40960" in ollama_short.reason
    silent = verdicts.context_windows([window("openai", 8192, None)])
    assert silent.status == PASS and "not checkable" in silent.reason
    assert "qwen3-32b on gpu1" in silent.reason
    mixed = verdicts.context_windows([window("openai", 8192, None), window("openai", 4096, 8192)])
    assert mixed.status == FAIL and "serves 8192" in mixed.reason
    assert verdicts.context_windows([]).status == SKIP


def test_self_heal() -> None:
    commands = {"gpu1": "systemctl restart ollama"}
    found = {
        "gpu1": {
            "program": "systemctl",
            "path": "/bin/systemctl",
            "found": True,
            "executable": True,
        }
    }
    assert verdicts.self_heal(commands, found).status == PASS
    assert verdicts.self_heal({}, {}).status == SKIP
    silent = verdicts.self_heal(commands, {"gpu1": None})
    assert silent.status == FAIL and "clawdbot agent --node gpu1" in silent.reason
    missing = verdicts.self_heal(commands, {"gpu1": {"program": "systemctl", "found": False}})
    assert missing.status == FAIL and "not found" in missing.reason
    not_exec = verdicts.self_heal(
        commands, {"gpu1": {"program": "x", "path": "/x", "found": True, "executable": False}}
    )
    assert not_exec.status == FAIL and "not executable" in not_exec.reason


def test_error_rate() -> None:
    assert verdicts.error_rate(1000, {}, 0.005).status == PASS
    assert verdicts.error_rate(1000, {"m 503": 4}, 0.005).status == PASS
    verdict = verdicts.error_rate(100, {"m 503": 1}, 0.005)
    assert verdict.status == FAIL and "1 × m 503" in verdict.reason
    assert verdicts.error_rate(0, {}, 0.005).status == FAIL


def test_latency_p95_by_gpu_class() -> None:
    memory = {"small": 24.0, "large": 80.0}
    fast = {"small": [1.0] * 20, "large": [1.0] * 20}
    assert verdicts.latency_p95(fast, memory, 4.5, 2.8).status == PASS
    # 3 s is fine on a 24 GB card and too slow on an 80 GB one.
    slow = {"small": [3.0] * 20, "large": [3.0] * 20}
    verdict = verdicts.latency_p95(slow, memory, 4.5, 2.8)
    assert verdict.status == FAIL
    assert "large: p95 3.00 s over 2.8 s" in verdict.reason and "small:" not in verdict.reason
    assert verdicts.latency_p95({}, memory, 4.5, 2.8).status == FAIL


def test_many_problems_are_counted_not_all_listed() -> None:
    verdict = verdicts.from_problems([f"p{i}" for i in range(8)], "ok")
    assert verdict.status == FAIL and "and 3 more" in verdict.reason
    assert len(verdict.details["problems"]) == 8


def test_command_program_report(tmp_path: Path) -> None:
    found = command_program_report("FOO=1 sh -c 'systemctl restart ollama'")
    assert found["program"] == "sh" and found["found"] and found["executable"]
    missing = command_program_report("no-such-program-here restart")
    assert missing == {
        "program": "no-such-program-here",
        "path": None,
        "found": False,
        "executable": False,
    }
    script = tmp_path / "restart.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(stat.S_IRUSR)
    report = command_program_report(f"{script} --now")
    assert report["found"] is True
    assert report["executable"] is False  # no execute bit: not even root may run it
    script.chmod(stat.S_IRWXU)
    assert command_program_report(str(script))["executable"] is True
    assert command_program_report("'unbalanced")["found"] is False


def test_a_burst_the_nodes_cannot_hold_says_so() -> None:
    hint = verdicts.capacity_hint({"qwen3-32b": 20, "small": 400}, {"qwen3-32b": 50, "small": 50})
    assert "qwen3-32b 50 sent, 20 admitted" in hint and "small" not in hint
    assert "CLAWDBOT_READY_SMOKE_REQUESTS" in hint
    assert verdicts.capacity_hint({"qwen3-32b": 200}, {"qwen3-32b": 100}) == ""


def test_the_smoke_burst_is_shared_out_between_models() -> None:
    assert verdicts.share_out(100, ["a", "b", "c"]) == {"a": 34, "b": 33, "c": 33}
    assert verdicts.share_out(2, ["a", "b", "c"]) == {"a": 1, "b": 1}
    assert verdicts.share_out(100, ["a"]) == {"a": 100}
