"""One measured fix to daphne's HTTP layer, applied when the ASGI application is loaded.

Twisted (24 and later) parses every POST's Content-Type with the `email` package to find
HTML form submissions; on a request path this short that costs about a fifth of the gateway's
CPU per request (py-spy under `make bench`). Daphne hands the raw body to the ASGI
application and never reads twisted's parsed form arguments (`request.args`), so the parse is
pure waste: switch it off on daphne's request class."""

from __future__ import annotations

from typing import Any


def skip_form_parsing() -> None:
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not running under daphne
        return
    if getattr(WebRequest, "_clawdbot_tuned", False):
        return
    original = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__
    WebRequest._clawdbot_tuned = True
