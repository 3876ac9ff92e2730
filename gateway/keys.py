"""Gateway API keys: `ck-<prefix>-<secret>`. Only a keyed hash of the whole key is stored;
the prefix finds the row and the digest is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from functools import lru_cache

KEY_SCHEME = "ck"
PREFIX_LENGTH = 8
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str


def generate_key() -> tuple[str, str]:
    """A new (prefix, full key). Letters and digits only, so it survives copy and paste."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))
    return prefix, f"{KEY_SCHEME}-{prefix}-{secret}"


def parse_key(raw: str) -> ParsedKey | None:
    """Split a presented key; None when it cannot be a Clawdbot key."""
    parts = raw.split("-", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != PREFIX_LENGTH or not secret or len(secret) > 200:
        return None
    return ParsedKey(prefix=prefix, secret=secret)


@lru_cache(maxsize=4)
def _hmac_key(pepper: str) -> bytes:
    return hashlib.sha256(b"clawdbot.apikey:" + pepper.encode()).digest()


def hash_key(raw: str, pepper: str) -> str:
    """HMAC-SHA256 of the full key, keyed by a value derived from the site secret."""
    return hmac.new(_hmac_key(pepper), raw.encode(), hashlib.sha256).hexdigest()


def digest_matches(raw: str, digest: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_key(raw, pepper), digest)


def display_key(raw: str) -> str:
    """How to name a presented key in an error message without echoing its secret."""
    parsed = parse_key(raw)
    if parsed is None:
        return raw[:6] + "…" if len(raw) > 6 else "…"
    return f"{KEY_SCHEME}-{parsed.prefix}-…"
