"""What the browser tests share: the world a test gets (Console), logging in through the form,
screenshots under var/screenshots/ (CLAWDBOT_SCREENSHOTS), and the phone-width overflow check."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.contrib.auth.models import User
from playwright.sync_api import Page

from gateway.services import CreatedKey
from nodes.models import Node
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("CLAWDBOT_SCREENSHOTS") or REPO_ROOT / "var" / "screenshots")
NODE = "sim-h200"
MODEL = "qwen3-32b"
PASSWORD = "console-horse-battery"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Console:
    """One test's world: the gateway, its staff user and key, the simulated node."""

    gateway: GatewayProcess
    user: User
    key: CreatedKey
    node: Node
    sim: SimProcess

    @property
    def url(self) -> str:
        return self.gateway.url

    def chat(self, content: str, *, stream: bool = False) -> httpx.Response:
        """A real request through /v1, as any client sends it."""
        return httpx.post(
            self.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key.secret}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 16,
                "stream": stream,
            },
            timeout=30,
        )


def log_in(page: Page, console: Console, path: str = "/") -> None:
    """Through the login form, as a person does; lands on `path`."""
    page.goto(f"{console.url}/login/?next={path}")
    page.get_by_label("Username").fill(console.user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{console.url}{path}")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def overflowing(page: Page) -> list[str]:
    """Elements wider than the viewport's right edge (the cause of sideways scrolling at
    phone width), as `tag.class` strings; empty when the page fits."""
    result: list[str] = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          if (document.documentElement.scrollWidth <= width) return [];
          const out = [];
          for (const el of document.querySelectorAll('body *')) {
            const box = el.getBoundingClientRect();
            if (box.right > width + 1 && box.width > 0) {
              const cls = String(el.className || '').trim().split(/\\s+/).join('.');
              out.push(el.tagName.toLowerCase() + (cls ? '.' + cls : '')
                       + ' (' + Math.round(box.right) + 'px)');
            }
          }
          return out.slice(0, 10);
        }"""
    )
    return result
