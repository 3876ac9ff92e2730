"""GPU readings through NVML fakes, the no-NVML path, the Redis store and the weight input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clawdbot_site import redis_keys
from nodes import fake_nvml, telemetry, telemetry_store
from nodes.weights import Telemetry, node_weight

REPO_ROOT = Path(__file__).resolve().parents[2]

TWO_H200: dict[str, Any] = {
    "driver_version": "550.54.15",
    "gpus": [
        {
            "name": "NVIDIA H200",
            "uuid": "GPU-aaaa",
            "util": 80,
            "mem_util": 30,
            "mem_used_mib": 40960,
            "mem_total_mib": 143771,
            "temperature": 71,
            "power_w": 512.25,
            "power_limit_w": 700,
            "processes": [{"pid": os.getpid(), "used_mib": 40000}, {"pid": 999999999}],
        },
        {
            "name": "NVIDIA H200",
            "uuid": "GPU-bbbb",
            "util": 20,
            "mem_util": 5,
            "mem_used_mib": 1024,
            "mem_total_mib": 143771,
            "temperature": 48,
        },
    ],
}


@pytest.fixture
def fake_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(TWO_H200))
    monkeypatch.setenv(fake_nvml.FAKE_ENV, str(path))
    return path


def test_reading_through_the_fake_nvml(fake_file: Path) -> None:
    reading = telemetry.read(fake_nvml)

    assert reading["nvml"] is True
    assert reading["error"] == ""
    assert reading["driver_version"] == "550.54.15"
    assert reading["read_ms"] >= 0
    first, second = reading["gpus"]
    assert first == {
        "index": 0,
        "name": "NVIDIA H200",
        "uuid": "GPU-aaaa",
        "utilisation_gpu_pct": 80,
        "utilisation_memory_pct": 30,
        "memory_used_mib": 40960,
        "memory_total_mib": 143771,
        "temperature_c": 71,
        "power_draw_w": 512.2,
        "power_limit_w": 700.0,
        "processes": [
            # The name comes from /proc: this test's own process is visible, a dead pid is not.
            {"pid": os.getpid(), "used_memory_mib": 40000, "name": _comm(os.getpid())},
            {"pid": 999999999, "used_memory_mib": None, "name": None},
        ],
        "errors": [],
    }
    # A board without power sensors or process accounting: None, and not an error.
    assert second["power_draw_w"] is None
    assert second["power_limit_w"] is None
    assert second["processes"] is None
    assert second["errors"] == []
    assert telemetry.describe(reading) == "2 GPUs (NVIDIA H200 ×2), driver 550.54.15"


def test_the_fake_is_reread_on_every_reading(fake_file: Path) -> None:
    assert telemetry.read(fake_nvml)["gpus"][0]["temperature_c"] == 71
    changed = {"gpus": [{"name": "NVIDIA A100", "util": 5, "temperature": 90}]}
    fake_file.write_text(json.dumps(changed))

    reading = telemetry.read(fake_nvml)

    assert [(g["name"], g["temperature_c"]) for g in reading["gpus"]] == [("NVIDIA A100", 90)]


class TinyNvml:
    """A minimal pynvml stand-in whose power and process calls are 'not supported' and whose
    temperature needs permissions this user lacks."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return {3: "Not Supported", 4: "Insufficient Permissions"}.get(self.value, "?")

    def __init__(self, *, init_error: int | None = None, count_error: int | None = None) -> None:
        self.init_error = init_error
        self.count_error = count_error
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "535.1"

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise self.NVMLError(self.count_error)
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: object) -> str:
        return "NVIDIA A10"

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return "GPU-tiny"

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=55, memory=7)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(total=24 * 1024**3, used=3 * 1024**3, free=21 * 1024**3)

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        raise self.NVMLError(4)

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        raise self.NVMLError(3)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        raise self.NVMLError(3)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[object]:
        raise self.NVMLError(3)


def test_unsupported_calls_leave_none_and_other_failures_are_named() -> None:
    nvml = TinyNvml()

    reading = telemetry.read(nvml)  # type: ignore[arg-type]

    assert reading["nvml"] is True
    (gpu,) = reading["gpus"]
    assert (gpu["name"], gpu["utilisation_gpu_pct"], gpu["memory_total_mib"]) == (
        "NVIDIA A10",
        55,
        24576,
    )
    assert (gpu["power_draw_w"], gpu["power_limit_w"], gpu["processes"]) == (None, None, None)
    assert gpu["temperature_c"] is None
    assert gpu["errors"] == ["temperature: Insufficient Permissions"]
    assert (nvml.inits, nvml.shutdowns) == (1, 1)


def test_shutdown_follows_a_failed_reading() -> None:
    nvml = TinyNvml(count_error=15)

    reading = telemetry.read(nvml)  # type: ignore[arg-type]

    assert reading["nvml"] is False
    assert reading["error"].startswith("no NVML: counting GPUs failed")
    assert (nvml.inits, nvml.shutdowns) == (1, 1)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (9, "no NVML: Driver Not Loaded (the NVIDIA kernel driver is not loaded)"),
        (12, "no NVML: NVML Shared Library Not Found (libnvidia-ml.so.1 was not found"),
    ],
)
def test_init_failure_is_a_plain_reason(
    fake_file: Path, code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_file.write_text(json.dumps({**TWO_H200, "init_error": code}))

    reading = telemetry.read(fake_nvml)

    assert reading["nvml"] is False
    assert reading["error"].startswith(message)
    assert reading["gpus"] == []
    assert telemetry.describe(reading) == reading["error"]
    assert capsys.readouterr() == ("", "")  # no traceback printed anywhere


def test_missing_nvidia_ml_py_is_a_plain_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail

    reading = telemetry.read()

    assert reading["nvml"] is False
    assert reading["error"] == (
        "no NVML: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
    )
    assert telemetry.nvml_from_env({})[0] is None


def test_real_nvml_on_a_host_without_a_gpu() -> None:
    reading = telemetry.read()
    if reading["nvml"]:
        pytest.skip("this machine has a working NVIDIA driver")
    assert reading["error"].startswith("no NVML: ")
    assert "Traceback" not in reading["error"]


def test_nvml_from_env_picks_the_fake_only_when_asked(fake_file: Path) -> None:
    module, source = telemetry.nvml_from_env({fake_nvml.FAKE_ENV: str(fake_file)})
    assert module is fake_nvml
    assert source == f"fake, from CLAWDBOT_FAKE_NVML={fake_file}"
    module, source = telemetry.nvml_from_env({})
    assert module is not fake_nvml
    assert source == "real (nvidia-ml-py)"


def test_script_prints_one_json_reading(fake_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "nodes/telemetry.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, fake_nvml.FAKE_ENV: str(fake_file)},
    )

    assert result.returncode == 0, result.stderr
    reading = json.loads(result.stdout)
    assert [g["uuid"] for g in reading["gpus"]] == ["GPU-aaaa", "GPU-bbbb"]
    assert reading["gpus"][0]["power_draw_w"] == 512.2


def test_script_runs_alone_without_the_project(tmp_path: Path) -> None:
    # The file is carried alone to GPU machines: copied out of the tree, in isolated mode
    # (no cwd, no PYTHONPATH on sys.path), it still runs and says what it found.
    alone = tmp_path / "telemetry.py"
    shutil.copy(REPO_ROOT / "nodes" / "telemetry.py", alone)
    env = {k: v for k, v in os.environ.items() if k != fake_nvml.FAKE_ENV}

    result = subprocess.run(
        [sys.executable, "-I", str(alone)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )

    assert result.stderr == ""
    reading = json.loads(result.stdout)
    assert result.returncode == (0 if reading["nvml"] else 1)
    assert reading["nvml"] or reading["error"].startswith("no NVML: ")


def test_summarise_gives_the_weight_its_input(fake_file: Path) -> None:
    reading = telemetry.read(fake_nvml)

    summary = telemetry_store.summarise(reading)

    assert summary == Telemetry(utilisation=0.5, temperature_c=71.0)
    # Half busy and warm: the weight drops below an idle, cool node's.
    assert node_weight("H200", telemetry=summary) < node_weight("H200")
    assert telemetry_store.total_memory_gb(reading) == 280.8


def test_summarise_without_gpus_is_none() -> None:
    no_nvml = {"nvml": False, "error": "no NVML: Driver Not Loaded", "gpus": []}
    assert telemetry_store.summarise(no_nvml) is None
    assert telemetry_store.summarise({"nvml": True, "error": "", "gpus": []}) is None
    assert telemetry_store.summarise(None) is None
    assert telemetry_store.total_memory_gb(no_nvml) is None


@pytest.fixture
def store_keys() -> Iterator[None]:
    client = telemetry_store.sync_client()
    names = ("t-gpu1", "t-gpu2", "t-gpu3")
    keys = [telemetry_store.telemetry_key(n) for n in names]
    keys += [telemetry_store.agent_key(n) for n in names]
    client.delete(*keys)
    yield
    client.delete(*keys)


@pytest.mark.usefixtures("store_keys")
@pytest.mark.slow  # real Redis
def test_store_keeps_the_latest_reading_until_its_ttl(fake_file: Path) -> None:
    reading = telemetry.read(fake_nvml)
    telemetry_store.publish("t-gpu1", reading, ttl_s=0.3)
    telemetry_store.publish("t-gpu2", {"nvml": False, "error": "no NVML: Driver Not Loaded"})
    client = telemetry_store.sync_client()
    assert client.pttl(redis_keys.telemetry("t-gpu2")) > 14000

    latest = telemetry_store.latest(["t-gpu1", "t-gpu2", "t-gpu3"])

    assert latest["t-gpu1"] == reading
    assert latest["t-gpu2"] == {"nvml": False, "error": "no NVML: Driver Not Loaded"}
    assert latest["t-gpu3"] is None
    assert telemetry_store.latest([]) == {}
    deadline = time.monotonic() + 5
    while telemetry_store.latest(["t-gpu1"])["t-gpu1"] is not None:
        assert time.monotonic() < deadline, "the reading outlived its TTL"
        time.sleep(0.05)  # bounded poll on Redis's own expiry


@pytest.mark.usefixtures("store_keys")
@pytest.mark.slow  # real Redis
def test_heartbeats_say_which_agents_live() -> None:
    telemetry_store.heartbeat("t-gpu1")
    telemetry_store.heartbeat("t-gpu2")
    assert telemetry_store.agents_alive(["t-gpu1", "t-gpu2", "t-gpu3"]) == {"t-gpu1", "t-gpu2"}
    assert 25000 < telemetry_store.sync_client().pttl(redis_keys.agent_heartbeat("t-gpu1")) <= 30000

    telemetry_store.forget_agent("t-gpu2")

    assert telemetry_store.agents_alive(["t-gpu1", "t-gpu2"]) == {"t-gpu1"}
    assert telemetry_store.agents_alive([]) == set()


@pytest.mark.usefixtures("store_keys")
@pytest.mark.slow  # real Redis
def test_garbage_in_redis_reads_as_no_telemetry() -> None:
    telemetry_store.sync_client().set(redis_keys.telemetry("t-gpu1"), b"not json", ex=5)
    assert telemetry_store.latest(["t-gpu1"]) == {"t-gpu1": None}


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()
