"""Install the real inference servers the tests in tests/realservers drive, each in its own
virtualenv under var/servers/, with a tiny model built locally.

    python tests/realservers/install.py [llamacpp] [vllm]      # `make real-servers`

Each server gets var/servers/<name>/venv (its pins never meet the project's .venv) and its
model (var/servers/llamacpp/model.gguf, var/servers/vllm/model/), from a lock file beside this
one (requirements-<name>.txt). A stamp records what was installed; a second run with the same
lock and model builder does nothing, and a changed one rebuilds that server from scratch.
pip's wheel cache keeps the one slow step, llama-cpp-python's compilation (about 8 minutes on
two free cores), for every later install, a fresh clone's included.

Standard library only: it runs under any Python 3.11 before the project is installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVERS = ROOT / "var" / "servers"
BUILDER = HERE / "tinymodel.py"


@dataclass(frozen=True)
class Server:
    name: str
    # A pip requirements file beside this one: every package pinned, installed with
    # --no-deps, so there is no resolution (minutes of index look-ups) and CI installs
    # exactly what was measured.
    lock: str
    # tinymodel.py's flag and the model's path under the server's directory.
    model_flag: str
    model_path: str

    @property
    def home(self) -> Path:
        return SERVERS / self.name

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.home / self.model_path

    @property
    def stamp(self) -> Path:
        return self.home / "installed.json"

    def venv_fingerprint(self) -> dict[str, str]:
        return {
            "python": sys.version.split()[0],
            "lock": hashlib.sha256((HERE / self.lock).read_bytes()).hexdigest(),
        }

    def model_fingerprint(self) -> dict[str, str]:
        return {"builder": hashlib.sha256(BUILDER.read_bytes()).hexdigest()}


# llama-cpp-python is built from source (no wheel on PyPI): about 8 minutes on two free
# cores, once; pip's wheel cache keeps the build for every later install.
LLAMACPP = Server(
    name="llamacpp",
    lock="requirements-llamacpp.txt",
    model_flag="--gguf",
    model_path="model.gguf",
)

VLLM = Server(
    name="vllm",
    lock="requirements-vllm.txt",
    model_flag="--hf",
    model_path="model",
)

ALL = {s.name: s for s in (LLAMACPP, VLLM)}


def read_stamp(server: Server) -> dict[str, object]:
    try:
        stamp = json.loads(server.stamp.read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd[:4])} … failed ({code}); the end of {log}:\n{tail}")


def install(server: Server) -> None:
    """The server's virtualenv (rebuilt when its lock changes) and its model (rebuilt when
    the builder changes), each only when it is not there as wanted."""
    stamp = read_stamp(server)
    venv_ok = stamp.get("venv") == server.venv_fingerprint() and server.python.exists()
    model_ok = (
        venv_ok and stamp.get("model") == server.model_fingerprint() and server.model.exists()
    )
    if model_ok:
        print(f"real-servers: {server.name} is installed ({server.home})")
        return
    started = time.monotonic()
    log = server.home / "install.log"
    if not venv_ok:
        print(f"real-servers: installing {server.name} into {server.home} …", flush=True)
        shutil.rmtree(server.home, ignore_errors=True)
        server.home.mkdir(parents=True)
        venv.EnvBuilder(with_pip=True).create(server.home / "venv")
        pip = [str(server.python), "-m", "pip", "--disable-pip-version-check"]
        run([*pip, "install", "--no-deps", "--requirement", str(HERE / server.lock)], log)
        stamp = {"venv": server.venv_fingerprint()}
        server.stamp.write_text(json.dumps(stamp, indent=2))
    print(f"real-servers: building {server.name}'s model {server.model} …", flush=True)
    shutil.rmtree(server.model, ignore_errors=True)
    server.model.unlink(missing_ok=True)
    run([str(server.python), str(BUILDER), server.model_flag, str(server.model)], log)
    elapsed = time.monotonic() - started
    stamp |= {"model": server.model_fingerprint(), "seconds": round(elapsed, 1)}
    server.stamp.write_text(json.dumps(stamp, indent=2))
    print(f"real-servers: {server.name} ready in {elapsed:.0f} s", flush=True)


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in ALL]
    if unknown:
        raise SystemExit(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    for name in argv or list(ALL):
        install(ALL[name])


if __name__ == "__main__":
    main(sys.argv[1:])
