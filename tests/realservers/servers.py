"""Start the real inference servers installed by tests/realservers/install.py.

    server = start_llamacpp(n_ctx=1024)     # llama-cpp-python's llama_cpp.server
    server = start_vllm(max_model_len=1024) # vLLM's OpenAI API server, on the CPU
    server.url, server.model, server.log()  # its address, served model id and output so far
    server.stop()

Each runs from its own virtualenv under var/servers/, in a process group of its own (vLLM
starts an engine process beside its API server), and is stopped with all its processes.
This module imports no Django: the servers are plain programs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.gateways import free_port
from tests.realservers.install import LLAMACPP, VLLM, Server

MODEL_ID = "tiny-llama"


def unavailable(server: Server) -> str | None:
    """Why `server` cannot be started here, or None when it is installed."""
    stamp = server.home / "installed.json"
    if not stamp.exists() or not server.python.exists() or not server.model.exists():
        return (
            f"{server.name} is not installed under {server.home}: "
            f"run `make real-servers` (or python tests/realservers/install.py {server.name})"
        )
    return None


@dataclass
class RealServer:
    kind: str
    proc: subprocess.Popen[bytes]
    url: str
    model: str
    version: str
    context_window: int  # what it was started with: llama.cpp's n_ctx, vLLM's max_model_len
    _log: tempfile._TemporaryFileWrapper[bytes] = field(repr=False)

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (a process vLLM started): end what is left of it.
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group has exited


def _start(
    server: Server,
    kind: str,
    args: list[str],
    env: dict[str, str],
    context_window: int,
    timeout_s: float,
) -> RealServer:
    reason = unavailable(server)
    if reason:
        raise RuntimeError(reason)
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"{kind}-", suffix=".log")
    version = subprocess.run(
        [str(server.python), "-c", f"import importlib.metadata as m; print(m.version({kind!r}))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [str(server.python), *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=server.home,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = RealServer(
        kind, proc, f"http://127.0.0.1:{port}", MODEL_ID, version, context_window, log
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = started.log()
            started.stop()
            raise RuntimeError(
                f"{kind} exited ({proc.returncode}) while starting:\n{output[-4000:]}"
            )
        try:
            if httpx.get(started.url + "/v1/models", timeout=2).status_code == 200:
                return started
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # bounded readiness poll
    output = started.log()
    started.stop()
    raise RuntimeError(f"{kind} did not answer /v1/models within {timeout_s} s:\n{output[-4000:]}")


def start_llamacpp(n_ctx: int) -> RealServer:
    """llama-cpp-python's server on the tiny GGUF. It serves one request at a time, the
    others waiting their turn."""
    return _start(
        LLAMACPP,
        "llama_cpp_python",
        [
            "-m",
            "llama_cpp.server",
            "--model",
            str(LLAMACPP.model),
            "--model_alias",
            MODEL_ID,
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            "1",
            # By default a request arriving while a stream runs cuts that stream short: it
            # ends with [DONE] and no finish_reason, which reads as a whole answer. Behind a
            # gateway that sends several requests at once, the server must queue them.
            "--interrupt_requests",
            "False",
        ],
        env={},
        context_window=n_ctx,
        timeout_s=120,
    )


def start_vllm(max_model_len: int) -> RealServer:
    """vLLM's OpenAI-compatible API server on the tiny Hugging Face model, on the CPU."""
    return _start(
        VLLM,
        "vllm_cpu",
        [
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(VLLM.model),
            "--served-model-name",
            MODEL_ID,
            "--max-model-len",
            str(max_model_len),
            "--dtype",
            "float32",
            # No torch.compile and no CUDA-graph-like capture: minutes of start-up on two
            # cores for a model that takes microseconds per token.
            "--enforce-eager",
            "--max-num-seqs",
            "8",
            # The engine in the API server's own process: each process of vLLM's imports
            # torch and vLLM anew, a minute or more on two busy cores.
            "--distributed-executor-backend",
            "uni",
        ],
        env={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # A gigabyte of KV cache is plenty for a 2-layer model; the default takes 4.
            "VLLM_CPU_KVCACHE_SPACE": "1",
            # Other processes share the two cores: pinning threads to cores would fight them.
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        },
        context_window=max_model_len,
        timeout_s=600,
    )


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of a Prometheus metric's samples in `text` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, label_text = series.partition("{")
        if series_name != name:
            continue
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        if all(json.loads(found.get(k, "null")) == v for k, v in (labels or {}).items()):
            total += float(value)
    return total
