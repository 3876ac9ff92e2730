"""Logging in, the overview's node card with the replayed H200's meters moving, and a killed
simulator's state change arriving over the WebSocket without a reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import NODE, PASSWORD, Console, log_in, screenshot

# A browser, a gateway, Celery, an agent and a simulator. The first test of the package also
# starts the package's worker, beat and agent (and maybe creates the test database) within
# its own time limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_log_in_and_see_the_simulated_node_with_its_gpu_moving(
    page: Page, console: Console
) -> None:
    page.goto(console.url + "/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.get_by_label("Username").fill(console.user.username)
    page.get_by_label("Password").fill("not " + PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    screenshot(page, "login-refused")

    log_in(page, console)
    card = page.locator(f'[data-node="{NODE}"]')
    expect(card.locator('[data-field="state"]')).to_have_text("READY")
    expect(page.locator("[data-live]")).to_have_attribute("data-state", "open")
    gpu = card.locator(".gpu").first
    expect(gpu).to_contain_text("NVIDIA H200")
    # The replayed H200 goes from idle to fully loaded and back within seconds: the meter's
    # text must take both values on this page, from telemetry events alone.
    utilisation = gpu.locator('.meter[data-kind="utilisation"] .meter-top span').last
    expect(utilisation).to_have_text(re.compile(r"^(99|100) %$"), timeout=15_000)
    screenshot(page, "overview-loaded")
    expect(utilisation).to_have_text("0 %", timeout=15_000)
    power = gpu.locator('.meter[data-kind="power"] .meter-top span').last
    expect(power).to_contain_text("/ 700 W")


def test_a_killed_node_turns_degraded_on_the_open_page(page: Page, console: Console) -> None:
    log_in(page, console)
    state = page.locator(f'[data-node="{NODE}"] [data-field="state"]')
    expect(state).to_have_text("READY")
    expect(page.locator("[data-live]")).to_have_attribute("data-state", "open")
    # A reload would drop this; it must still be there when the new state shows.
    page.evaluate("window.__sameDocument = true")

    console.sim.stop()
    expect(state).to_have_text(re.compile("DEGRADED|DOWN"), timeout=15_000)
    assert page.evaluate("window.__sameDocument === true")
    expect(page.locator(f'[data-node="{NODE}"] [data-field="error"]')).not_to_be_empty()
    screenshot(page, "overview-degraded")
