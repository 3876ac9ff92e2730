"""The real H200 recording, its replay through the fake NVML, and the recorder itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes import fake_nvml, gpu_recording, telemetry

H200 = fake_nvml.RECORDINGS_DIR / "h200.jsonl"


def _gpu_series(key: str) -> list[float]:
    recording = fake_nvml.load_recording(H200)
    return [float(frame["gpus"][0][key]) for frame in recording.frames]


def test_the_h200_recording_is_a_real_gpu_idle_loaded_and_cooling() -> None:
    recording = fake_nvml.load_recording(H200)
    assert len(recording.frames) == 61
    assert recording.step_s == 1.0
    gpu = recording.frames[0]["gpus"][0]
    assert gpu["name"] == "NVIDIA H200"
    assert gpu["mem_total_mib"] == 143771
    assert gpu["power_limit_w"] == 700.0
    util = _gpu_series("util")
    power = _gpu_series("power_w")
    temperature = _gpu_series("temperature")
    memory = _gpu_series("mem_used_mib")
    # Idle first (0 %, ~81 W), then the matrix products (≥99 %, ~690 W, 64 GiB held),
    # then idle with the process's CUDA context still open (0 %, ~125 W).
    assert util[:10] == [0.0] * 10 and max(power[:10]) < 100 and memory[:10] == [0.0] * 10
    assert min(util[15:45]) >= 99 and min(power[15:45]) > 650 and min(memory[15:45]) > 65536
    assert util[-5:] == [0.0] * 5 and 100 < max(power[-5:]) < 150
    assert max(temperature) - min(temperature) >= 15


def test_the_replay_loops_on_the_wall_clock() -> None:
    recording = fake_nvml.load_recording(H200)
    assert fake_nvml.frame_at(recording, 0.0) is recording.frames[0]
    assert fake_nvml.frame_at(recording, 20.5) is recording.frames[20]
    assert fake_nvml.frame_at(recording, 61.0 + 20.5) is recording.frames[20]
    assert fake_nvml.frame_at(recording, 2.05, speed=10) is recording.frames[20]


def test_the_agent_reading_replays_the_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(H200))
    nvml, source = telemetry.nvml_from_env()
    assert nvml is fake_nvml
    assert source.endswith("h200.jsonl")
    reading = telemetry.read(nvml)
    assert reading["nvml"] and reading["driver_version"] == "580.159.04"
    [gpu] = reading["gpus"]
    assert gpu["name"] == "NVIDIA H200"
    assert gpu["utilisation_gpu_pct"] in set(_gpu_series("util"))
    assert gpu["power_draw_w"] in set(_gpu_series("power_w"))
    # Recorded PIDs are another machine's: none are replayed.
    assert gpu["processes"] == []
    assert gpu["errors"] == []


def test_a_bad_replay_speed_is_an_nvml_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(H200))
    monkeypatch.setenv(fake_nvml.SPEED_ENV, "fast")
    reading = telemetry.read(fake_nvml)
    assert not reading["nvml"]
    assert "CLAWDBOT_FAKE_NVML_SPEED must be a number above 0, not 'fast'" in reading["error"]


def test_a_recording_without_readings_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"summary": True}) + "\n")
    with pytest.raises(ValueError, match="no readings"):
        fake_nvml.load_recording(empty)


def test_what_the_recorder_writes_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder against a fake GPU file (no torch here: the load reports that it could
    not start, and the readings go on): its output is a recording the fake NVML replays."""
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps([{"name": "NVIDIA H200", "util": 42, "temperature": 50}]))
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(gpus))
    out = tmp_path / "rec.jsonl"
    gpu_recording.record(str(out), gpu_recording.Phases(0.5, 0.5, 0.5), resident_gib=8, n=64)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["phase"] for line in lines[:-1]] == ["idle", "cool"]
    assert lines[-1]["summary"] is True
    assert lines[-1]["nvml_source"].startswith("fake, from CLAWDBOT_FAKE_NVML=")
    replayed = fake_nvml.load_recording(out)
    assert [frame["gpus"][0]["util"] for frame in replayed.frames] == [42, 42]
    assert replayed.frames[0]["gpus"][0]["power_w"] == "unsupported"
