"""An identity provider's signing keys (its JWKS), held in this process for gateway.auth.

Fetched when the runtime starts and every CLAWDBOT_JWT_JWKS_REFRESH_S after, in the background;
fetched at once when a token names a key id the set lacks (the provider rotated its keys), but
at most once every CLAWDBOT_JWT_JWKS_COOLDOWN_S, so tokens with made-up key ids cannot turn
into a stream of requests to the provider. Concurrent requests share one fetch, and a fetch
takes at most FETCH_TIMEOUT_S. A fetch that fails keeps the set already loaded; a set that
loads replaces the old one whole, so a key the provider withdrew stops verifying."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from jwt import PyJWK, PyJWTError

from gateway.sso import TokenRejected

log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 2.0
MAX_DOCUMENT_BYTES = 1024 * 1024
# A key's type and the token algorithms it may verify: a key never verifies a token of
# another family, whatever the token's header says.
FAMILIES = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


class JwksError(Exception):
    """The key set could not be fetched or read."""


@dataclass(frozen=True)
class KeySet:
    by_kid: dict[str, dict[str, Any]] = field(default_factory=dict)
    without_kid: tuple[dict[str, Any], ...] = ()


def parse_jwks(document: bytes) -> KeySet:
    """The signing keys of a JWKS document. Encryption keys and symmetric keys (a secret
    published in a key set is no secret) are left out."""
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise JwksError("the key set is not JSON") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise JwksError("the key set has no 'keys' list")
    by_kid: dict[str, dict[str, Any]] = {}
    without_kid = []
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") not in FAMILIES:
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            by_kid.setdefault(kid, jwk)
        else:
            without_kid.append(jwk)
    if not by_kid and not without_kid:
        raise JwksError("the key set has no signing keys")
    return KeySet(by_kid, tuple(without_kid))


def signing_key(key_set: KeySet, kid: str | None, alg: str) -> PyJWK | None:
    """The key that may verify a token with this kid and alg; None when the set has none.
    A token without a kid is verified only by a set's one key of its family."""
    if kid is not None:
        jwk = key_set.by_kid.get(kid)
    else:
        fitting = [
            k for k in (*key_set.by_kid.values(), *key_set.without_kid) if alg in FAMILIES[k["kty"]]
        ]
        jwk = fitting[0] if len(fitting) == 1 else None
    if jwk is None:
        return None
    named = f"key {kid!r}" if kid else "key"
    if alg not in FAMILIES[jwk["kty"]] or jwk.get("alg", alg) != alg:
        raise TokenRejected(
            f"The token's algorithm {alg} is not its {named}'s ({jwk.get('alg') or jwk['kty']})."
        )
    try:
        return PyJWK(jwk, algorithm=alg)
    except PyJWTError as exc:
        raise TokenRejected(f"The identity provider's {named} is unusable: {exc}.") from None


class Jwks:
    def __init__(
        self, url: str, *, refresh_s: float, cooldown_s: float, timeout_s: float = FETCH_TIMEOUT_S
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.cooldown_s = cooldown_s
        self.key_set: KeySet | None = None
        self.generation = 0  # moves whenever the set changes
        self.error = ""  # why the last fetch failed; empty after a success
        self._keys: dict[tuple[str | None, str], PyJWK] = {}
        self._last_attempt = float("-inf")
        self._fetching: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def key(self, kid: str | None, alg: str) -> PyJWK | None:
        """The loaded set's key for a token (see signing_key), parsed once per set."""
        if self.key_set is None:
            return None
        key = self._keys.get((kid, alg))
        if key is None:
            key = signing_key(self.key_set, kid, alg)
            if key is not None:  # an unknown kid is not kept: any client can make them up
                self._keys[kid, alg] = key
        return key

    async def refresh(self, *, urgent: bool = False) -> None:
        """Fetch the set now, or join the fetch in progress. `urgent` (a token named an
        unknown key) does nothing within the cooldown of the last attempt."""
        if self._fetching is None:
            now = time.monotonic()
            if urgent and now - self._last_attempt < self.cooldown_s:
                return
            self._last_attempt = now
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        # Shielded: a request cancelled while it waits (its client left) leaves the fetch
        # running for the others.
        await asyncio.shield(self._fetching)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._fetching = None

    async def run_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.cooldown_s if self.error else self.refresh_s)

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                key_set = parse_jwks(await self._download())
        except TimeoutError:
            self._failed(f"no answer within {self.timeout_s:g} s")
            return
        except (JwksError, httpx.HTTPError) as exc:
            self._failed(str(exc) or exc.__class__.__name__)
            return
        except Exception as exc:
            # Whatever went wrong, requests must see a failed fetch, not this exception.
            log.exception("JWKS %s: unexpected error", self.url)
            self._failed(exc.__class__.__name__)
            return
        if self.error:
            log.warning("JWKS %s fetched again", self.url)
        self.error = ""
        if key_set != self.key_set:
            self.key_set, self._keys = key_set, {}
            self.generation += 1

    def _failed(self, reason: str) -> None:
        if not self.error:
            kept = "keeping the keys loaded before" if self.key_set else "no keys loaded"
            log.warning("JWKS %s cannot be fetched (%s): %s", self.url, reason, kept)
        self.error = reason

    async def _download(self) -> bytes:
        # One client for the process's life: making one loads the CA bundle (milliseconds of
        # CPU on the event loop), and the provider's connection is kept alive between fetches.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        async with self._client.stream(
            "GET", self.url, headers={"accept": "application/json"}
        ) as response:
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise JwksError(f"the key set is larger than {MAX_DOCUMENT_BYTES} bytes")
            return bytes(body)
