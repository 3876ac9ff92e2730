"""A FAKE `pynvml`: the few NVML functions `nodes.telemetry` calls, answering from a JSON file.

Why it exists and why it lives in the package (not under tests/): CI has no GPU, and neither
does the simulated demo node that `make run` starts, yet both run the real node agent. Setting
CLAWDBOT_FAKE_NVML to a JSON file makes the agent read its GPUs from that file through this
module instead of the driver, so everything above the NVML boundary (the agent, Redis, the
console, routing weights) runs for real. Nothing else imports it.

The file is re-read on every `nvmlInit()`, so a test (or a person) can change the numbers
between readings. Either a list of GPUs or an object:

    {"driver_version": "550.54.15",
     "init_error": null,              # e.g. 9 to act as "Driver Not Loaded"
     "gpus": [{"name": "NVIDIA H200", "uuid": "GPU-1", "util": 37, "mem_util": 12,
               "mem_used_mib": 40960, "mem_total_mib": 143771, "temperature": 54,
               "power_w": 312.5, "power_limit_w": 700,
               "processes": [{"pid": 4242, "used_mib": 40000}]}]}

A GPU without "power_w", "power_limit_w" or "processes" (or with the value "unsupported")
answers those calls with NVML_ERROR_NOT_SUPPORTED, as boards without the sensor do.

A file whose name ends in `.jsonl` is a RECORDING of real readings instead, as
`nodes/gpu_recording.py` writes it (`nodes/recordings/h200.jsonl`: an NVIDIA H200 idle, under a
bf16 matrix-multiply load, and cooling down). It is replayed in a loop, driven by the wall
clock, so every process reading it at the same moment sees the same frame and the numbers move
as the real GPU's did; CLAWDBOT_FAKE_NVML_SPEED (default 1) plays it faster, for tests that
want to see the whole curve in seconds. The recorded processes are left out: their PIDs belong
to the machine that was recorded, and this host's /proc would name whatever has them here.

Names, signatures and return shapes follow nvidia-ml-py; like pynvml, this module must not
import Django or the project (telemetry.py loads it beside itself when run as a script).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0
FAKE_ENV = "CLAWDBOT_FAKE_NVML"
SPEED_ENV = "CLAWDBOT_FAKE_NVML_SPEED"
MIB = 1024 * 1024
RECORDINGS_DIR = Path(__file__).resolve().parent / "recordings"

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: `.value` is the NVML return code, str() its message."""

    def __init__(self, value: int, detail: str = "") -> None:
        super().__init__(value)
        self.value = value
        self.detail = detail

    def __str__(self) -> str:
        message = _MESSAGES.get(self.value, f"NVML Error with code {self.value}")
        return f"{message} ({self.detail})" if self.detail else message


@dataclass(frozen=True, slots=True)
class c_nvmlUtilization_t:  # pynvml's names, so the fake reads like the real module
    gpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class c_nvmlMemory_t:
    total: int
    free: int
    used: int


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    usedGpuMemory: int | None  # bytes; None where the driver cannot tell
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Handle:
    index: int


_lock = threading.Lock()
_state: dict[str, Any] = {"refcount": 0, "driver": "", "gpus": []}


def nvmlInit() -> None:
    """Read the file named by CLAWDBOT_FAKE_NVML; a missing file is a missing library."""
    path = os.environ.get(FAKE_ENV, "")
    if not path:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND, f"{FAKE_ENV} is not set")
    try:
        if path.endswith(".jsonl"):
            data = frame_at(load_recording(path), time.time(), _speed())
        else:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
    except OSError as exc:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND, f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise NVMLError(NVML_ERROR_UNKNOWN, f"{path} is not JSON: {exc}") from None
    if isinstance(data, list):
        data = {"gpus": data}
    if not isinstance(data, dict) or not isinstance(data.get("gpus", []), list):
        raise NVMLError(NVML_ERROR_UNKNOWN, f"{path}: expected a list of GPUs or {{'gpus': [...]}}")
    if data.get("init_error"):
        raise NVMLError(int(data["init_error"]))
    with _lock:
        _state["refcount"] += 1
        _state["driver"] = str(data.get("driver_version", "550.54.15-fake"))
        _state["gpus"] = [gpu for gpu in data.get("gpus", []) if isinstance(gpu, dict)]


def nvmlShutdown() -> None:
    with _lock:
        if _state["refcount"] == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        _state["refcount"] -= 1


def nvmlSystemGetDriverVersion() -> str:
    _check_init()
    return str(_state["driver"])


def nvmlDeviceGetCount() -> int:
    _check_init()
    return len(_state["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> Handle:
    _check_init()
    if not 0 <= index < len(_state["gpus"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if _state["gpus"][index].get("lost"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return Handle(index)


def nvmlDeviceGetName(handle: Handle) -> str:
    return str(_gpu(handle).get("name", "NVIDIA Fake GPU"))


def nvmlDeviceGetUUID(handle: Handle) -> str:
    return str(_gpu(handle).get("uuid", f"GPU-fake-{handle.index:08d}"))


def nvmlDeviceGetUtilizationRates(handle: Handle) -> c_nvmlUtilization_t:
    gpu = _gpu(handle)
    return c_nvmlUtilization_t(gpu=int(gpu.get("util", 0)), memory=int(gpu.get("mem_util", 0)))


def nvmlDeviceGetMemoryInfo(handle: Handle, version: int | None = None) -> c_nvmlMemory_t:
    gpu = _gpu(handle)
    total = int(float(gpu.get("mem_total_mib", 81920)) * MIB)
    used = int(float(gpu.get("mem_used_mib", 0)) * MIB)
    return c_nvmlMemory_t(total=total, free=max(0, total - used), used=used)


def nvmlDeviceGetTemperature(handle: Handle, sensor: int) -> int:
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_gpu(handle).get("temperature", 35))


def nvmlDeviceGetPowerUsage(handle: Handle) -> int:
    """Milliwatts, as NVML counts them."""
    return round(float(_supported(handle, "power_w")) * 1000)


def nvmlDeviceGetEnforcedPowerLimit(handle: Handle) -> int:
    return round(float(_supported(handle, "power_limit_w")) * 1000)


def nvmlDeviceGetComputeRunningProcesses(handle: Handle) -> list[ProcessInfo]:
    processes = _supported(handle, "processes")
    result = []
    for proc in processes:
        used = proc.get("used_mib")
        result.append(
            ProcessInfo(
                pid=int(proc["pid"]), usedGpuMemory=None if used is None else int(used) * MIB
            )
        )
    return result


def _check_init() -> None:
    if _state["refcount"] == 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _gpu(handle: Handle) -> dict[str, Any]:
    _check_init()
    if not isinstance(handle, Handle) or not 0 <= handle.index < len(_state["gpus"]):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    gpu: dict[str, Any] = _state["gpus"][handle.index]
    return gpu


def _supported(handle: Handle, key: str) -> Any:
    value = _gpu(handle).get(key)
    if value is None or value == "unsupported":
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return value


@dataclass(frozen=True, slots=True)
class Recording:
    frames: list[dict[str, Any]]  # each in this module's file format: {"driver_version", "gpus"}
    step_s: float  # seconds between readings as recorded

    @property
    def duration_s(self) -> float:
        return len(self.frames) * self.step_s


_recordings: dict[tuple[str, int], Recording] = {}


def load_recording(path: str | Path) -> Recording:
    """The readings of a `gpu_recording` file as fake GPUs, parsed once per file version
    (an agent reads every few seconds; the file does not change under it)."""
    mtime = os.stat(path).st_mtime_ns
    key = (str(path), mtime)
    cached = _recordings.get(key)
    if cached is not None:
        return cached
    times: list[float] = []
    frames: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            entry = json.loads(line)
            if not isinstance(entry, dict) or "reading" not in entry:
                continue  # the recorder's summary line
            reading = entry["reading"]
            if not isinstance(reading, dict) or not isinstance(reading.get("gpus"), list):
                raise ValueError(f"line {number} has no reading with a list of gpus")
            times.append(float(entry.get("t", len(times))))
            frames.append(
                {
                    "driver_version": reading.get("driver_version") or "recorded",
                    "gpus": [_recorded_gpu(gpu) for gpu in reading["gpus"]],
                }
            )
    if not frames:
        raise ValueError("no readings in the recording")
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    recording = Recording(frames, round(statistics.median(steps), 3) if steps else 1.0)
    _recordings[key] = recording
    return recording


def frame_at(recording: Recording, now: float, speed: float = 1.0) -> dict[str, Any]:
    """The frame showing at Unix time `now`: the recording loops, frame i showing from
    i·step to (i+1)·step into each loop, `speed` times faster than it was recorded."""
    index = int(now * speed / recording.step_s) % len(recording.frames)
    return recording.frames[index]


def _recorded_gpu(gpu: dict[str, Any]) -> dict[str, Any]:
    """A `telemetry.GpuReading` as this module's fake GPU; a field the real GPU did not
    report is left out, or "unsupported" where that is what NVML answered."""
    fake: dict[str, Any] = {"processes": []}
    for recorded, key in (
        ("name", "name"),
        ("uuid", "uuid"),
        ("utilisation_gpu_pct", "util"),
        ("utilisation_memory_pct", "mem_util"),
        ("memory_used_mib", "mem_used_mib"),
        ("memory_total_mib", "mem_total_mib"),
        ("temperature_c", "temperature"),
    ):
        if gpu.get(recorded) is not None:
            fake[key] = gpu[recorded]
    for recorded, key in (("power_draw_w", "power_w"), ("power_limit_w", "power_limit_w")):
        fake[key] = "unsupported" if gpu.get(recorded) is None else gpu[recorded]
    return fake


def _speed() -> float:
    raw = os.environ.get(SPEED_ENV, "") or "1"
    try:
        speed = float(raw)
    except ValueError:
        speed = 0.0
    if not speed > 0:
        raise NVMLError(NVML_ERROR_UNKNOWN, f"{SPEED_ENV} must be a number above 0, not {raw!r}")
    return speed
