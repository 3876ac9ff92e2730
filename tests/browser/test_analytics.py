"""The latency charts after real requests through /v1, and the chat page's streamed answer."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from gateway.models import RequestLog
from tests.browser.harness import MODEL, NODE, Console, log_in, screenshot

# A browser, a gateway, Celery, an agent and a simulator. The first test of the package also
# starts the package's worker, beat and agent (and maybe creates the test database) within
# its own time limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def wait_for_logged_requests(count: int, timeout_s: float = 15.0) -> None:
    """Until beat's flush (every 2 s) has written `count` request-log rows (bounded poll)."""
    deadline = time.monotonic() + timeout_s
    while RequestLog.objects.count() < count:
        assert time.monotonic() < deadline, f"fewer than {count} request logs in {timeout_s} s"
        time.sleep(0.1)


def test_latency_charts_show_the_requests_just_sent(page: Page, console: Console) -> None:
    for n in range(6):
        assert console.chat(f"question {n}", stream=n % 2 == 1).status_code == 200
    wait_for_logged_requests(6)

    log_in(page, console, "/latency/")
    expect(page.get_by_test_id("requests")).to_have_text("6")
    expect(page.get_by_test_id("statuses")).to_contain_text("200")
    # uPlot draws each chart into a canvas, from the figures the page carries.
    for chart in ("chart-latency", "chart-latency-hist", "chart-ttft", "chart-ttft-hist"):
        expect(page.locator(f"#{chart} canvas").first).to_be_visible()
    charts = page.evaluate("JSON.parse(document.getElementById('latency-data').textContent)")
    assert sum(charts["latency_hist"]["counts"]) == 6
    assert sum(charts["ttft_hist"]["counts"]) == 6
    [times, *percentiles] = charts["latency"]
    assert times and all(any(v is not None for v in series) for series in percentiles)
    expect(page.locator("table.breakdown").first).to_contain_text(MODEL)
    screenshot(page, "latency")

    page.get_by_role("link", name="Request log").click()
    expect(page.locator("main")).to_contain_text(NODE)
    # Times to the second, which the admin's list never showed, and not cut off at 1280 px.
    when = page.get_by_test_id("requestlog").locator("tbody tr td").first
    expect(when).to_have_text(re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"))
    assert when.evaluate("el => el.scrollWidth <= el.clientWidth"), "the time is cut off"
    screenshot(page, "requests")


def test_chat_streams_the_answer_in(page: Page, console: Console) -> None:
    # The model loaded first, then the node's decoding slowed: the answer arrives over a
    # second or more, token by token, and its first token well before the gateway's
    # keep-alive, so the stream's headers name the node.
    assert console.chat("load the model").status_code == 200
    console.sim.control(speed=0.2)
    log_in(page, console, "/ui")
    expect(page.locator("#chat-model")).to_have_value(MODEL)
    # Every text the answer bubble shows, recorded as it changes.
    page.evaluate(
        """() => {
          window.__answers = [];
          new MutationObserver(() => {
            const bubbles = document.querySelectorAll('#chat-log .msg');
            const last = bubbles[bubbles.length - 1];
            if (last) window.__answers.push(last.firstChild ? last.firstChild.textContent : '');
          }).observe(document.getElementById('chat-log'),
                     {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.locator("#chat-input").fill("Tell me about GPUs")
    page.locator("#chat-input").press("Enter")
    meta = page.get_by_test_id("answer-meta")
    expect(meta).to_contain_text(f"node {NODE}", timeout=20_000)
    expect(meta).to_contain_text("first token")
    expect(meta).to_contain_text(re.compile(r"\d+ in / \d+ out"))
    answers: list[str] = page.evaluate("window.__answers")
    partial = {a for a in answers if a and a != "…"}
    # Streamed: the bubble showed several growing prefixes of the final answer, not one text.
    assert len(partial) >= 3, answers
    final = max(partial, key=len)
    assert all(final.startswith(a) for a in partial), answers
    screenshot(page, "chat")
