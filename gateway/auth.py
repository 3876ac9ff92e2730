"""Authenticating a /v1 request against the snapshot's key digests (constant-time)."""

from __future__ import annotations

import time

from gateway.errors import GatewayError
from gateway.keys import digest_matches, display_key, parse_key
from gateway.snapshot import KeyView, Snapshot


def _invalid(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key", None)


def authenticate(authorization: bytes | None, snapshot: Snapshot, pepper: str) -> KeyView:
    if not authorization:
        raise _invalid(
            "You didn't provide an API key. Send it as 'Authorization: Bearer ck-…'; create one "
            "with `clawdbot apikey create --name NAME`."
        )
    scheme, _, raw = authorization.decode("latin-1").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        raise _invalid("The Authorization header must look like 'Bearer ck-…'.")
    parsed = parse_key(raw)
    key = snapshot.keys.get(parsed.prefix) if parsed else None
    # Compare even when the prefix is unknown, so timing says nothing about which prefixes exist.
    digest = key.digest if key else "0" * 64
    if not digest_matches(raw, digest, pepper) or key is None:
        raise _invalid(
            f"Incorrect API key provided: {display_key(raw)}. It is unknown, revoked or expired."
        )
    if key.expires_at is not None and key.expires_at <= time.time():
        raise _invalid(f"The API key {display_key(raw)} has expired.")
    return key
