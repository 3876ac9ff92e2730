"""Authenticating a /v1 request: a Clawdbot key against the snapshot's key digests (constant
time), or, with single sign-on configured, a JWT against the shared secret or the identity
provider's keys (gateway.sso says what a token may do, gateway.jwks holds the keys)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from gateway.errors import GatewayError, upstream_unavailable
from gateway.jwks import Jwks
from gateway.keys import KEY_SCHEME, digest_matches, display_key, parse_key
from gateway.snapshot import KeyView, Snapshot
from gateway.sso import (
    Caller,
    SsoPolicy,
    TokenPrincipal,
    TokenRejected,
    check_algorithm,
    looks_like_jwt,
    principal_from_claims,
    unverified_header,
    verify_claims,
)

VERIFIED_TOKENS_KEPT = 10_000
KEY_PREFIX = KEY_SCHEME + "-"  # a bearer starting so is a key, whatever else it looks like


def _invalid(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key", None)


async def authenticate(
    authorization: bytes | None,
    snapshot: Snapshot,
    pepper: str,
    tokens: TokenVerifier | None = None,
) -> Caller:
    if not authorization:
        raise _invalid(
            "You didn't provide an API key. Send it as 'Authorization: Bearer ck-…'; create one "
            "with `clawdbot apikey create --name NAME`."
        )
    scheme, _, raw = authorization.decode("latin-1").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        raise _invalid("The Authorization header must look like 'Bearer ck-…'.")
    if tokens is not None and not raw.startswith(KEY_PREFIX) and looks_like_jwt(raw):
        return await tokens.verify(raw)
    return _key(raw, snapshot, pepper)


def _key(raw: str, snapshot: Snapshot, pepper: str) -> KeyView:
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


class TokenVerifier:
    """Verifies JWTs and remembers the verified ones until they expire, by digest, so a
    client that sends the same token again costs a hash and a lookup."""

    def __init__(self, policy: SsoPolicy, *, secret: str = "", jwks: Jwks | None = None) -> None:
        self.policy = policy
        self.secret = secret
        self.jwks = jwks
        self._verified: dict[bytes, TokenPrincipal] = {}
        self._generation = 0  # the key set's, when the tokens in _verified were verified

    @classmethod
    def from_settings(cls, settings: Any) -> TokenVerifier | None:
        if not settings.CLAWDBOT_JWT_ENABLED:
            return None
        jwks = None
        if settings.CLAWDBOT_JWT_JWKS_URL:
            jwks = Jwks(
                settings.CLAWDBOT_JWT_JWKS_URL,
                refresh_s=settings.CLAWDBOT_JWT_JWKS_REFRESH_S,
                cooldown_s=settings.CLAWDBOT_JWT_JWKS_COOLDOWN_S,
            )
        policy = SsoPolicy.from_settings(settings)
        return cls(policy, secret=settings.CLAWDBOT_JWT_SECRET, jwks=jwks)

    async def verify(self, token: str) -> TokenPrincipal:
        self._forget_if_keys_changed()
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if known.expires_at > time.time():
                return known
            del self._verified[digest]
        try:
            alg, kid = unverified_header(token)
            check_algorithm(alg, self.policy)
            key = self.secret if alg.startswith("HS") else await self._public_key(kid, alg)
            if not key:
                raise TokenRejected(f"The token is signed with {alg!r}, which needs a key.")
            principal = principal_from_claims(
                verify_claims(token, key, alg, self.policy), self.policy
            )
        except TokenRejected as exc:
            raise _invalid(str(exc)) from None
        # Checked with the keys loaded now (no await since its key was chosen).
        self._forget_if_keys_changed()
        self._remember(digest, principal)
        return principal

    def _forget_if_keys_changed(self) -> None:
        if self.jwks is not None and self.jwks.generation != self._generation:
            # A token verified by a key the provider withdrew must not stay verified.
            self._verified.clear()
            self._generation = self.jwks.generation

    async def _public_key(self, kid: str | None, alg: str) -> Any:
        jwks = self.jwks
        if jwks is None:
            return None
        key = jwks.key(kid, alg)
        if key is None:
            await jwks.refresh(urgent=True)
            key = jwks.key(kid, alg)
        if key is not None:
            return key
        if jwks.key_set is None:
            raise upstream_unavailable(
                "The identity provider's signing keys (JWKS) cannot be fetched, so tokens "
                "cannot be verified; try again shortly.",
                5,
            )
        if kid is None:
            reason = "The token names no key id (kid), and no single key in the identity "
            reason += "provider's key set fits it"
        else:
            reason = f"The token's key id {kid!r} is not in the identity provider's key set"
        failed = f" (fetching the set again failed: {jwks.error})" if jwks.error else ""
        raise TokenRejected(f"{reason}{failed}.")

    def _remember(self, digest: bytes, principal: TokenPrincipal) -> None:
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            now = time.time()
            for d in [d for d, p in self._verified.items() if p.expires_at <= now]:
                del self._verified[d]
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                # The oldest tenth goes: they verify again if they come back.
                for d in list(self._verified)[: VERIFIED_TOKENS_KEPT // 10]:
                    del self._verified[d]
        self._verified[digest] = principal
