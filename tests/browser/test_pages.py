"""Every console page at 1280 px and at phone width (390 × 844): it renders, and at phone
width nothing makes the page scroll sideways. A screenshot of each is saved for people to
look at (var/screenshots/)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.harness import (
    DESKTOP,
    NODE,
    PHONE,
    Console,
    log_in,
    overflowing,
    screenshot,
)

# A browser, a gateway, Celery, an agent and a simulator. The first test of the package also
# starts the package's worker, beat and agent (and maybe creates the test database) within
# its own time limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PAGES = {
    "overview": ("/", "Cluster"),
    "nodes": ("/nodes/", "Nodes"),
    "node": (f"/nodes/{NODE}/", NODE),
    "latency": ("/latency/", "Latency"),
    "usage": ("/usage/", "usage"),
    "requests": ("/requests/", "Request log"),
    "readiness": ("/readiness/", "Readiness"),
    "chat": ("/ui", "Chat"),
}


def test_every_page_fits_a_phone_and_a_desktop(browser: Browser, console: Console) -> None:
    for n in range(3):
        assert console.chat(f"warm-up {n}").status_code == 200
    overflows: dict[str, list[str]] = {}
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(20_000)
        page = context.new_page()
        try:
            log_in(page, console)
            for name, (path, heading) in PAGES.items():
                response = page.goto(console.url + path)
                assert response is not None and response.status == 200, (name, path)
                expect(page.locator("h1").first).to_contain_text(heading, ignore_case=True)
                screenshot(page, f"{name}-{label}")
                if label == "phone":
                    found = overflowing(page)
                    if found:
                        overflows[name] = found
        finally:
            context.close()
    assert not overflows, f"wider than 390 px: {overflows}"
