from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from clawdbot_site.redis_client import sync_client
from gateway.request_log import BUFFER, REJECTED


class Command(BaseCommand):
    help = (
        "Request-log entries the database refused, set aside by the flush so that the rest "
        "kept flowing: show them, send them back to be flushed again (after a fix), or drop "
        "them. The count since the start is clawdbot_request_log_rejected_total on /metrics."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="rejected|requeue|drop")
        shown = sub.add_parser("rejected", help="print the entries set aside, one a line")
        shown.add_argument("--limit", type=int, default=20, help="the newest N (default 20)")
        sub.add_parser("requeue", help="move every entry set aside back to the buffer")
        sub.add_parser("drop", help="delete every entry set aside")

    def handle(self, *args: Any, **options: Any) -> None:
        client = sync_client()
        action = options["action"]
        if action == "rejected":
            limit = max(1, options["limit"])
            total = client.llen(REJECTED)
            for raw in client.lrange(REJECTED, -limit, -1):
                self.stdout.write(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
            pending = client.llen(BUFFER)
            self.stderr.write(
                f"{total} entr{'y' if total == 1 else 'ies'} set aside; "
                f"{pending} waiting to be flushed.\n"
            )
        elif action == "requeue":
            moved = 0
            while client.lmove(REJECTED, BUFFER, "LEFT", "RIGHT") is not None:
                moved += 1
            self.stderr.write(f"{moved} entries sent back to the buffer.\n")
        else:  # the count on /metrics stays: it counts refusals, not what is kept
            dropped = client.llen(REJECTED)
            client.delete(REJECTED)
            self.stderr.write(f"{dropped} entries dropped.\n")
