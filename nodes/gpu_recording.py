"""Record a real GPU's telemetry while a PyTorch matrix-multiply loop loads it in phases.

Run on a machine with an NVIDIA GPU, PyTorch and nvidia-ml-py (nothing of Django is needed):

    python3 -m nodes.gpu_recording --out h200.jsonl

Once a second the main thread takes a reading exactly as the node agent does
(`telemetry.nvml_from_env()` then `telemetry.read()`), while a background thread keeps the GPU
idle, then busy with back-to-back bf16 matrix products on a large resident allocation, then
idle again. Each line of the output is `{"t": seconds since start, "phase": ..., "reading":
<nodes.telemetry.Reading>}`; the last line is a summary of the load itself. The fake NVML
(`nodes.fake_nvml`) replays such a file, so the demo node and the tests show this curve.

nodes/recordings/h200.jsonl was made this way on an NVIDIA H200 (README, "GPU telemetry").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nodes import telemetry

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Phases:
    idle_s: float = 10.0
    load_s: float = 35.0
    cool_s: float = 15.0

    @property
    def total_s(self) -> float:
        return self.idle_s + self.load_s + self.cool_s

    def at(self, t: float) -> str:
        if t < self.idle_s:
            return "idle"
        if t < self.idle_s + self.load_s:
            return "load"
        return "cool"


@dataclass(slots=True)
class LoadReport:
    products: int = 0
    busy_s: float = 0.0
    resident_gib: float = 0.0
    error: str = ""
    started_at_t: float | None = None
    stopped_at_t: float | None = None
    per_second: list[float] = field(default_factory=list)


def load_gpu(
    phases: Phases, t0: float, stop: threading.Event, report: LoadReport, resident_gib: int, n: int
) -> None:
    """Idle, then matrix products until the load phase ends, then free everything.

    CUDA is first touched when the load begins, so the idle phase shows an untouched GPU.
    Memory is taken in 8 GiB steps over the first seconds (as a server loading weights would),
    then held while the products run.
    """
    if stop.wait(max(0.0, t0 + phases.idle_s - time.monotonic())):
        return
    try:
        import torch  # only on the GPU machine; the rest of the project never needs it

        report.started_at_t = round(time.monotonic() - t0, 3)
        device = torch.device("cuda")
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        resident = []
        for _ in range(resident_gib // 8):
            resident.append(torch.empty(8 * GIB, dtype=torch.uint8, device=device).fill_(1))
            c = a @ b  # keep the SMs busy while memory is being taken
            torch.cuda.synchronize()
        report.resident_gib = len(resident) * 8
        load_end = t0 + phases.idle_s + phases.load_s
        begun = time.monotonic()
        while time.monotonic() < load_end and not stop.is_set():
            for _ in range(8):  # about 11 ms of work at ~790 TFLOP/s for n=8192: stop is prompt
                c = a @ b
            torch.cuda.synchronize()
            report.products += 8
        report.busy_s = round(time.monotonic() - begun, 3)
        del a, b, c, resident
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        report.stopped_at_t = round(time.monotonic() - t0, 3)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"


def nvidia_smi() -> str:
    """nvidia-smi's own view, written beside the readings to cross-check the agent's."""
    query = (
        "name,driver_version,utilization.gpu,memory.used,memory.total,temperature.gpu,"
        "power.draw,power.limit,clocks.sm"
    )
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    return done.stdout.strip() or done.stderr.strip()


def record(out_path: str, phases: Phases, resident_gib: int, n: int) -> int:
    nvml, source = telemetry.nvml_from_env()
    if nvml is None:
        print(f"NVML {source}", file=sys.stderr)
        return 1
    stop = threading.Event()
    report = LoadReport()
    t0 = time.monotonic()
    loader = threading.Thread(
        target=load_gpu, args=(phases, t0, stop, report, resident_gib, n), daemon=True
    )
    loader.start()
    smi: dict[str, str] = {"start": nvidia_smi()}
    with open(out_path, "w", encoding="utf-8") as out:
        tick = 0
        while tick <= phases.total_s:
            # A fixed schedule from t0, so slow readings do not drift the series.
            time.sleep(max(0.0, t0 + tick - time.monotonic()))
            t = time.monotonic() - t0
            reading = telemetry.read(nvml)
            out.write(json.dumps({"t": round(t, 3), "phase": phases.at(t), "reading": reading}))
            out.write("\n")
            out.flush()
            if tick == int(phases.idle_s + phases.load_s / 2):
                smi["load"] = nvidia_smi()
            tick += 1
        stop.set()
        loader.join(timeout=30)
        smi["end"] = nvidia_smi()
        flops = 2 * n**3 * report.products
        summary: dict[str, Any] = {
            "summary": True,
            "nvml_source": source,
            "phases_s": [phases.idle_s, phases.load_s, phases.cool_s],
            "matmul": f"bf16 {n}x{n}x{n}",
            "products": report.products,
            "busy_s": report.busy_s,
            "tflops": round(flops / report.busy_s / 1e12, 1) if report.busy_s else None,
            "resident_gib": report.resident_gib,
            "load_started_at_t": report.started_at_t,
            "load_stopped_at_t": report.stopped_at_t,
            "error": report.error,
            "nvidia_smi": smi,
        }
        out.write(json.dumps(summary) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if not report.error else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, help="the JSON-lines file to write")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle first")
    parser.add_argument("--load", type=float, default=35.0, help="seconds under load")
    parser.add_argument("--cool", type=float, default=15.0, help="seconds idle after")
    parser.add_argument("--resident-gib", type=int, default=64, help="GPU memory held under load")
    parser.add_argument("--size", type=int, default=8192, help="matrix side")
    args = parser.parse_args(argv)
    phases = Phases(args.idle, args.load, args.cool)
    return record(args.out, phases, args.resident_gib, args.size)


if __name__ == "__main__":
    sys.exit(main())
