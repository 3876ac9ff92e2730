"""`make run`: everything Clawdbot needs on one machine, under honcho, stopped by Ctrl-C.

Embedded Redis (unless REDIS_URL is set), migrations, a first-run admin user and demo API
key, then the gateway (`clawdbot serve --workers N`: one daphne process per CPU behind the one
port, CLAWDBOT_WEB_WORKERS), a Celery worker, Celery beat and — while the cluster has no real
node — one simulated GPU node registered through `clawdbot onboard`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from clawdbot_site import embedded_redis, supervisor
from clawdbot_site.env import ConfigError, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CLAWDBOT_VAR_DIR") or BASE_DIR / "var")
BIN = Path(sys.executable).parent
PORT = int(os.environ.get("CLAWDBOT_PORT", "8000"))
SIM_PORT = int(os.environ.get("CLAWDBOT_SIM_PORT", "11500"))
SIM_NODE = "sim-a100"
SIM_MODEL = "qwen3:32b"
CREDENTIALS = VAR_DIR / "demo-credentials.json"


def _wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)  # bounded readiness poll
    return False


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clawdbot_site.settings")
    import django

    django.setup()


def _bootstrap() -> dict[str, str]:
    """First run: an admin user and a demo key. The secrets are kept in a 0600 file under
    var/ (never in the database) so later runs can print them again."""
    from django.contrib.auth import get_user_model

    from gateway.services import apikey_create

    user_model = get_user_model()
    if CREDENTIALS.exists():
        stored = json.loads(CREDENTIALS.read_text())
        if user_model.objects.filter(username=stored.get("username")).exists():
            return dict(stored)
    password = secrets.token_urlsafe(12)
    user = user_model.objects.filter(username="admin").first()
    if user is None:
        user = user_model.objects.create_superuser("admin", "admin@localhost", password)
    else:
        user.set_password(password)
        user.save(update_fields=["password"])
    created = apikey_create(name="demo", owner=user)
    stored = {"username": "admin", "password": password, "api_key": created.secret}
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    CREDENTIALS.write_text(json.dumps(stored, indent=2))
    CREDENTIALS.chmod(0o600)
    return stored


def _needs_simulator() -> bool:
    from nodes.models import Node

    nodes = list(Node.objects.all())
    return not nodes or all(n.labels.get("simulated") for n in nodes)


def web_workers() -> int:
    """CLAWDBOT_WEB_WORKERS: gateway processes behind the port (default `auto`, one per CPU)."""
    raw = env_str("CLAWDBOT_WEB_WORKERS", "auto")
    try:
        return supervisor.worker_count(raw)
    except ValueError as exc:
        raise ConfigError(f"CLAWDBOT_WEB_WORKERS {exc}") from None


def _procfile(with_sim: bool, workers: int) -> Path:
    clawdbot = BIN / "clawdbot"
    celery = BIN / "celery"
    lines = [
        f"web: {clawdbot} serve --port {PORT} --workers {workers}",
        f"worker: {celery} -A clawdbot_site worker --loglevel INFO --concurrency 2",
        f"beat: {celery} -A clawdbot_site beat --loglevel INFO "
        f"--schedule {VAR_DIR / 'celerybeat-schedule'}",
    ]
    if with_sim:
        lines.append(
            f"sim: {clawdbot} simulate-node --port {SIM_PORT} --api ollama --gpu-type A100 "
            f"--model {SIM_MODEL} --context-length 40960"
        )
    path = VAR_DIR / "Procfile"
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_gpus() -> Path | None:
    """CLAWDBOT_DEMO_GPUS: what the simulated node's agent reports. `h200` (the default) or
    another recording's name under nodes/recordings/, or a path to a `.jsonl` recording:
    a real GPU's minute replayed in a loop, so the console's gauges move as a real one's did;
    `static`: None, one simulated A100 whose numbers never change."""
    from nodes import fake_nvml

    raw = env_str("CLAWDBOT_DEMO_GPUS", "h200").strip()
    if raw == "static":
        return None
    path = Path(raw) if raw.endswith(".jsonl") else fake_nvml.RECORDINGS_DIR / f"{raw}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in fake_nvml.RECORDINGS_DIR.glob("*.jsonl"))
        raise ConfigError(
            f"CLAWDBOT_DEMO_GPUS={raw!r}: no recording at {path}; use one of "
            f"{', '.join([*known, 'static'])} or a path to a .jsonl recording"
        )
    return path


def _static_gpus() -> Path:
    fake = VAR_DIR / "fake-gpus.json"
    fake.write_text(
        json.dumps(
            {
                "driver_version": "simulated",
                "gpus": [
                    {
                        "name": "NVIDIA A100-SXM4-80GB (simulated)",
                        "uuid": "GPU-simulated-0",
                        "util": 35,
                        "mem_used_mib": 66000,
                        "mem_total_mib": 81920,
                        "temperature": 58,
                        "power_w": 240,
                        "power_limit_w": 400,
                        "processes": [],
                    }
                ],
            }
        )
    )
    return fake


def _start_agent(env: dict[str, str], recording: Path | None) -> subprocess.Popen[bytes]:
    """The simulated node's agent: GPU telemetry from a fake NVML (the node has no GPU),
    so the console and the routing weight show what an agent reports. A second honcho, started
    once the node exists (the agent refuses to serve a node the database does not know)."""
    fake = recording or _static_gpus()
    procfile = VAR_DIR / "Procfile.agent"
    procfile.write_text(f"agent: {BIN / 'clawdbot'} agent --node {SIM_NODE}\n")
    return subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", str(procfile), "-d", str(BASE_DIR)],
        env={**env, "CLAWDBOT_FAKE_NVML": str(fake)},
    )


def _banner(creds: dict[str, str], with_sim: bool, workers: int) -> str:
    url = f"http://127.0.0.1:{PORT}"
    sim = (
        f"\n  Simulated node:  {SIM_NODE} at http://127.0.0.1:{SIM_PORT} (not a real GPU)"
        if with_sim
        else ""
    )
    return f"""
================ Clawdbot is running ================
  Gateway:    {url}/v1 ({workers} process{"es" if workers > 1 else ""})
  Console:    {url}/   (log in with the admin user below)
  Admin:      {url}/admin/   user: {creds["username"]}   password: {creds["password"]}
  API key:    {creds["api_key"]}{sim}
  (credentials are kept in {CREDENTIALS}; Ctrl-C stops everything)

  Try it:
  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {creds["api_key"]}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "{SIM_MODEL}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
======================================================
""".rstrip()


def main() -> int:
    try:
        workers = web_workers()
        recording = demo_gpus()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    if not os.environ.get("REDIS_URL"):
        sock = VAR_DIR / "redis.sock"
        if not embedded_redis.is_running(sock):
            redis_proc = embedded_redis.start(sock)
        os.environ["REDIS_URL"] = f"unix://{sock}"
        print(f"embedded Redis on {sock}", flush=True)
    try:
        _setup_django()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=1)
        creds = _bootstrap()
        with_sim = _needs_simulator()
        procfile = _procfile(with_sim, workers)
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", str(procfile), "-d", str(BASE_DIR)],
            env=dict(os.environ),
        )
        agent = None
        try:
            if with_sim:
                if not _wait_for_port(SIM_PORT, 30, honcho):
                    print("the simulated node did not start; see its output above", flush=True)
                else:
                    onboarded = subprocess.call(
                        [
                            str(BIN / "clawdbot"),
                            "onboard",
                            "--name",
                            SIM_NODE,
                            "--url",
                            f"http://127.0.0.1:{SIM_PORT}",
                            "--api",
                            "ollama",
                            "--gpu-type",
                            "A100",
                            "--vram-gb",
                            "80",
                            "--label",
                            "simulated=true",
                            "--prefetch",
                            "all",
                        ]
                    )
                    if onboarded == 0:
                        agent = _start_agent(dict(os.environ), recording)
            if _wait_for_port(PORT, 60, honcho):
                print(_banner(creds, with_sim, workers), flush=True)
            code = honcho.wait()
            if agent is not None:
                agent.terminate()
                agent.wait()
            return code
        except KeyboardInterrupt:
            # Ctrl-C reached both honchos too (same process group); let them stop their children.
            for proc in (honcho, agent):
                if proc is None:
                    continue
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait()
            return 130
    finally:
        if redis_proc is not None:
            embedded_redis.stop(redis_proc)


if __name__ == "__main__":
    sys.exit(main())
