"""The console's page renders from the installed templates (base.html is the dashboard app's
package data, so a wheel install has it too)."""

from __future__ import annotations

from collections.abc import Callable

from django.test import Client

from nodes.models import Node


def test_the_console_lists_the_nodes(admin_client: Client, make_node: Callable[..., Node]) -> None:
    make_node("gpu1")
    response = admin_client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "gpu1" in page and "<html" in page.lower()
