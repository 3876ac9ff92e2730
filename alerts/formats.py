"""What each kind of channel is sent for an event. Pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.events import AlertEvent

ICONS = {"info": "✅", "warning": "⚠️", "critical": "🚨"}


def _when(event: AlertEvent) -> str:
    return datetime.fromtimestamp(event.at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _suppressed(count: int) -> str:
    if not count:
        return ""
    return f"\n({count} similar alert{'s' * (count != 1)} held back since the last one)"


def webhook(event: AlertEvent, suppressed: int = 0) -> dict[str, Any]:
    """A generic JSON body: every field, for a receiver that routes on them."""
    return {**event.to_dict(), "time": _when(event), "suppressed": suppressed}


def _slack_escaped(text: str) -> str:
    """Slack reads &, < and > as markup (links, mentions): a probe error quoting HTML would
    turn into one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(event: AlertEvent, suppressed: int = 0) -> dict[str, Any]:
    """Slack's incoming-webhook body: `text` in its mrkdwn."""
    lines = [f"{ICONS[event.severity]} *{_slack_escaped(event.title)}*"]
    if event.text:
        lines.append(_slack_escaped(event.text))
    lines.append(f"_{_when(event)}_{_suppressed(suppressed)}")
    return {"text": "\n".join(lines)}


def wecom(event: AlertEvent, suppressed: int = 0) -> dict[str, Any]:
    """A WeCom (企业微信) group robot's markdown message (at most 4096 bytes)."""
    colour = {"info": "info", "warning": "warning", "critical": "warning"}[event.severity]
    content = f'## <font color="{colour}">{event.title}</font>\n'
    if event.text:
        content += f"> {event.text}\n"
    content += f"\n{_when(event)}{_suppressed(suppressed)}"
    encoded = content.encode()
    if len(encoded) > 4096:
        content = encoded[:4090].decode("utf-8", "ignore") + " …"
    return {"msgtype": "markdown", "markdown": {"content": content}}


def email(event: AlertEvent, suppressed: int = 0) -> tuple[str, str]:
    """(subject, body)."""
    subject = f"[Clawdbot {event.severity}] {event.title}"
    body = "\n\n".join(p for p in (event.text, _when(event) + _suppressed(suppressed)) if p)
    return subject, body
