"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a
daphne gateway process (tests/gateways.py) with a Celery worker and beat probing a simulator
process every half second and a node agent replaying the real H200 recording.

The browser is never downloaded: CLAWDBOT_CHROMIUM (default /usr/bin/chromium, Debian's
`chromium` package, which .ci/run installs) is the executable. Screenshots of every page go
to var/screenshots/ (CLAWDBOT_SCREENSHOTS), to be looked at after a run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, sync_playwright

from gateway.services import apikey_create
from nodes import fake_nvml
from nodes.models import Deployment, ModelProfile, Node
from tests.agents import AgentProcess
from tests.browser.harness import DESKTOP, MODEL, NODE, PASSWORD, Console
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess
from tests.workers import CeleryProcess

CHROMIUM_ENV = "CLAWDBOT_CHROMIUM"
# Probes and telemetry every half second, request logs flushed every 2 s (beat's default):
# a state change then reaches the page in about a second.
FAST_CONTROL = {
    "CLAWDBOT_PROBE_INTERVAL_S": "0.5",
    "CLAWDBOT_TELEMETRY_INTERVAL_S": "0.5",
    "CLAWDBOT_PROBE_TIMEOUT_S": "1",
}
# The 61-second H200 recording, ten times faster: idle, loaded and cooling within 6 s.
REPLAY_SPEED = "10"


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get(CHROMIUM_ENV) or "/usr/bin/chromium"
    if not shutil.which(path):
        pytest.skip(f"no Chromium at {path}: apt-get install chromium, or set {CHROMIUM_ENV}")
    return path


# Package scope, not session: while Playwright's sync API is open it keeps an asyncio loop
# running on the main thread, which the rest of the suite (async tests, Django's async-safety
# check) must not inherit.
@pytest.fixture(scope="package")
def browser(chromium: str) -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        # Django takes the tests' own ORM calls, made beside that loop, for calls from async
        # code. They are not: the tests are plain sync code.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def control_plane(transactional_db: None) -> Iterator[None]:
    """A worker and beat for one test, stopped before the test database is flushed: one
    still probing would hold row locks that the flush's TRUNCATE deadlocks against."""
    worker = CeleryProcess("worker", env=FAST_CONTROL)
    beat = CeleryProcess("beat", env=FAST_CONTROL)
    yield
    beat.stop()
    worker.stop()


@pytest.fixture(scope="package")
def h200_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """The node's agent, for all the browser tests: it writes to Redis only."""
    agent = AgentProcess(
        NODE,
        tmp_path_factory.mktemp("agent"),
        fake_nvml.RECORDINGS_DIR / "h200.jsonl",
        extra_env={fake_nvml.SPEED_ENV: REPLAY_SPEED},
    )
    yield agent
    agent.stop()


@pytest.fixture
def console(
    transactional_db: None,
    gateway: GatewayProcess,
    control_plane: None,
    h200_agent: AgentProcess,
    simulator: Callable[..., SimProcess],
) -> Console:
    sim = simulator("--api", "ollama", "--model", "qwen3:32b", "--speed", "20")
    user = User.objects.create_user("ops", "ops@example.com", PASSWORD, is_staff=True)
    profile = ModelProfile.objects.create(
        model_id=MODEL, upstream_model="qwen3:32b", context_window=8192, max_output_tokens=512
    )
    node = Node.objects.create(
        name=NODE,
        base_url=sim.url,
        api_kind="ollama",
        gpu_type="H200",
        vram_gb_per_gpu=141,
        state="READY",
    )
    Deployment.objects.create(node=node, profile=profile)
    key = apikey_create(name="browser", owner=user)
    gateway.wait_for_config()
    return Console(gateway=gateway, user=user, key=key, node=node, sim=sim)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    # Generous: CI machines are shared, and a page load there can take seconds.
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()
