"""One reading of this host's NVIDIA GPUs through NVML (the `nvidia-ml-py` package).

This file must run with nothing but `nvidia-ml-py` importable: it is copied alone to GPU
machines to prove the real path, and run there as

    python telemetry.py        # prints one JSON reading; exit status 1 when NVML is unavailable

So: no Django, no project imports (the one exception is `fake_nvml`, imported only when
CLAWDBOT_FAKE_NVML asks for it). The node agent (`nodes.agent`) calls `read()` every few
seconds and publishes the result through `nodes.telemetry_store`.

Every function takes the NVML module as a parameter (default: the real `pynvml`), so tests
pass `nodes.fake_nvml` or a smaller fake; a fake's errors are recognised through its own
`NVMLError` attribute, exactly like pynvml's.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

FAKE_ENV = "CLAWDBOT_FAKE_NVML"
MIB = 1024 * 1024

# Hints for the init failures an operator meets in practice; the rest speak for themselves.
_INIT_HINTS = {
    9: "the NVIDIA kernel driver is not loaded",  # NVML_ERROR_DRIVER_NOT_LOADED
    12: "libnvidia-ml.so.1 was not found: no NVIDIA driver on this host",  # LIBRARY_NOT_FOUND
    4: "this user may not query the GPUs",  # NVML_ERROR_NO_PERMISSION
    18: "the driver and NVML library versions differ: reboot or reload the driver",
}
_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED, when a module lacks the constant


class ProcessReading(TypedDict):
    pid: int
    used_memory_mib: int | None  # None where the driver cannot tell (e.g. WDDM)
    name: str | None  # from /proc; None when the process is in another PID namespace


class GpuReading(TypedDict):
    index: int
    name: str | None
    uuid: str | None
    utilisation_gpu_pct: int | None
    utilisation_memory_pct: int | None
    memory_used_mib: int | None
    memory_total_mib: int | None
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    processes: list[ProcessReading] | None  # None: not supported on this GPU
    errors: list[str]  # fields that failed for a reason other than "not supported"


class Reading(TypedDict):
    nvml: bool
    error: str  # "" when NVML answered; "no NVML: <reason>" otherwise
    driver_version: str | None
    gpus: list[GpuReading]
    read_ms: float
    at: float  # Unix time of the reading
    host: str


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host; str() is the operator-readable reason."""


def real_nvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable(
            "no NVML: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
        ) from None


def nvml_from_env(environ: dict[str, str] | None = None) -> tuple[ModuleType | None, str]:
    """The NVML module this process should read and a phrase saying which one it is.

    CLAWDBOT_FAKE_NVML names a JSON file of fake GPUs (CI and the simulated demo node have
    none); otherwise the real `pynvml`. The module is None when nvidia-ml-py is missing.
    """
    env = os.environ if environ is None else environ
    fake_path = env.get(FAKE_ENV, "")
    if fake_path:
        # Inside the package it is `nodes.fake_nvml`; run as a script it sits beside this file.
        name = f"{__package__}.fake_nvml" if __package__ else "fake_nvml"
        return importlib.import_module(name), f"fake, from {FAKE_ENV}={fake_path}"
    try:
        return real_nvml(), "real (nvidia-ml-py)"
    except NvmlUnavailable as exc:
        return None, f"unavailable: {exc}"


def read(nvml: ModuleType | None = None) -> Reading:
    """One reading of every GPU. Never raises because NVML is missing: the reading then has
    `nvml: False` and `error` says why, so the agent reports it and keeps running."""
    started = time.perf_counter()
    try:
        module = real_nvml() if nvml is None else nvml
        driver_version, gpus = read_gpus(module)
    except NvmlUnavailable as exc:
        return _reading(False, str(exc), None, [], started)
    error = "" if gpus else "NVML answered but reports no GPUs"
    return _reading(True, error, driver_version, gpus, started)


def read_gpus(nvml: ModuleType) -> tuple[str | None, list[GpuReading]]:
    """(driver version, one entry per GPU). Raises NvmlUnavailable when NVML cannot start."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(_init_failure(exc)) from None
    try:
        driver = _field(nvml, [], "driver_version", nvml.nvmlSystemGetDriverVersion)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(f"no NVML: counting GPUs failed: {exc}") from None
        return driver, [_read_gpu(nvml, index) for index in range(count)]
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass  # the reading is already taken; a failed shutdown changes nothing in it


def _read_gpu(nvml: ModuleType, index: int) -> GpuReading:
    errors: list[str] = []
    gpu: GpuReading = {
        "index": index,
        "name": None,
        "uuid": None,
        "utilisation_gpu_pct": None,
        "utilisation_memory_pct": None,
        "memory_used_mib": None,
        "memory_total_mib": None,
        "temperature_c": None,
        "power_draw_w": None,
        "power_limit_w": None,
        "processes": None,
        "errors": errors,
    }
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        errors.append(f"handle: {exc}")  # e.g. "GPU is lost": the other GPUs still count
        return gpu
    gpu["name"] = _field(nvml, errors, "name", nvml.nvmlDeviceGetName, handle)
    gpu["uuid"] = _field(nvml, errors, "uuid", nvml.nvmlDeviceGetUUID, handle)
    rates = _field(nvml, errors, "utilisation", nvml.nvmlDeviceGetUtilizationRates, handle)
    if rates is not None:
        gpu["utilisation_gpu_pct"] = int(rates.gpu)
        gpu["utilisation_memory_pct"] = int(rates.memory)
    memory = _memory(nvml, errors, handle)
    if memory is not None:
        gpu["memory_used_mib"] = int(memory.used) // MIB
        gpu["memory_total_mib"] = int(memory.total) // MIB
    temperature = _field(
        nvml,
        errors,
        "temperature",
        nvml.nvmlDeviceGetTemperature,
        handle,
        getattr(nvml, "NVML_TEMPERATURE_GPU", 0),
    )
    gpu["temperature_c"] = None if temperature is None else int(temperature)
    draw_mw = _field(nvml, errors, "power_draw", nvml.nvmlDeviceGetPowerUsage, handle)
    gpu["power_draw_w"] = None if draw_mw is None else round(int(draw_mw) / 1000, 1)
    limit_mw = _field(nvml, errors, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    gpu["power_limit_w"] = None if limit_mw is None else round(int(limit_mw) / 1000, 1)
    processes = _field(nvml, errors, "processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
    if processes is not None:
        gpu["processes"] = [_process(p) for p in processes]
    return gpu


def _field(nvml: ModuleType, errors: list[str], label: str, call: Any, *args: Any) -> Any:
    """The call's answer, or None when NVML cannot give it.

    "Not supported" is normal (power on some boards, processes under vGPU/MIG) and leaves
    no trace; any other NVML error is recorded so an operator can see why a field is empty.
    """
    try:
        return call(*args)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) != getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED):
            errors.append(f"{label}: {exc}")
        return None


def _memory(nvml: ModuleType, errors: list[str], handle: Any) -> Any:
    # The v2 query leaves driver-reserved memory out of "used" (about 0.6 GB on an idle H200),
    # as nvidia-smi does; drivers older than R510 know only v1, and fakes may too.
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except nvml.NVMLError:
            pass  # fall back to v1 below, which records any real failure
    return _field(nvml, errors, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)


def _process(info: Any) -> ProcessReading:
    pid = int(info.pid)
    used = getattr(info, "usedGpuMemory", None)
    return {
        "pid": pid,
        "used_memory_mib": None if used is None else int(used) // MIB,
        "name": process_name(pid),
    }


def process_name(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The command name of `pid`, best effort: NVML reports host PIDs, which a containerised
    agent may not see in its own /proc."""
    try:
        return (proc / str(pid) / "comm").read_text().strip() or None
    except OSError:
        return None


def _init_failure(exc: Exception) -> str:
    value = getattr(exc, "value", None)
    hint = _INIT_HINTS.get(value) if isinstance(value, int) else None
    return f"no NVML: {exc}" + (f" ({hint})" if hint else "")


def _reading(
    ok: bool, error: str, driver: str | None, gpus: list[GpuReading], started: float
) -> Reading:
    return {
        "nvml": ok,
        "error": error,
        "driver_version": driver,
        "gpus": gpus,
        "read_ms": round((time.perf_counter() - started) * 1000, 3),
        "at": round(time.time(), 3),
        "host": socket.gethostname(),
    }


def describe(reading: Reading) -> str:
    """One line for a console: "2 GPUs (NVIDIA H200 ×2), driver 550.54.15" or the error."""
    if not reading["nvml"]:
        return reading["error"]
    gpus = reading["gpus"]
    if not gpus:
        return reading["error"] or "no GPUs"
    names: dict[str, int] = {}
    for gpu in gpus:
        key = gpu["name"] or "unknown GPU"
        names[key] = names.get(key, 0) + 1
    kinds = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in names.items())
    plural = "GPU" if len(gpus) == 1 else "GPUs"
    return f"{len(gpus)} {plural} ({kinds}), driver {reading['driver_version'] or 'unknown'}"


def main() -> int:
    try:
        nvml, _source = nvml_from_env()
    except ImportError as exc:  # CLAWDBOT_FAKE_NVML set on a host without fake_nvml.py
        print(json.dumps({"nvml": False, "error": f"no NVML: {exc}"}))
        return 1
    reading = read(nvml)  # None: read() names the missing package
    print(json.dumps(reading, indent=2))
    return 0 if reading["nvml"] else 1


if __name__ == "__main__":
    sys.exit(main())
