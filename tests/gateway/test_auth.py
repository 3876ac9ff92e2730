"""Authenticating a /v1 request: Clawdbot keys and, with single sign-on on, JWTs signed with
the shared secret (no I/O here: tests/gateway/test_jwks.py fetches keys from a real server)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from gateway import auth
from gateway.auth import TokenVerifier, authenticate
from gateway.errors import GatewayError
from gateway.keys import generate_key, hash_key
from gateway.snapshot import KeyView, Snapshot
from gateway.sso import SsoPolicy, TokenPrincipal, rate_identity
from tests.gateway.identity import AUDIENCE, ISSUER, SECRET, SigningKey, hs_token, rs_token
from tests.gateway.views import KEY

PEPPER = "pepper-" * 6
PREFIX, RAW_KEY = generate_key()
SNAPSHOT = Snapshot(
    version=1,
    built_at=0.0,
    keys={PREFIX: replace(KEY, prefix=PREFIX, digest=hash_key(RAW_KEY, PEPPER))},
)
POLICY = SsoPolicy(algorithms=frozenset({"HS256"}), issuer=ISSUER, audience=(AUDIENCE,))


def bearer(raw: str) -> bytes:
    return f"Bearer {raw}".encode()


def verifier() -> TokenVerifier:
    return TokenVerifier(POLICY, secret=SECRET)


async def refused(raw: str, tokens: TokenVerifier | None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await authenticate(bearer(raw), SNAPSHOT, PEPPER, tokens)
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
    return caught.value


async def test_keys_take_their_own_path_with_single_sign_on_on_or_off() -> None:
    for tokens in (None, verifier()):
        key = await authenticate(bearer(RAW_KEY), SNAPSHOT, PEPPER, tokens)
        assert isinstance(key, KeyView) and key.prefix == PREFIX
        for wrong in (RAW_KEY[:-1] + "x", "ck-abc.def.ghi"):
            error = await refused(wrong, tokens)
            assert "Incorrect API key provided" in error.message


async def test_a_token_is_an_unknown_key_while_single_sign_on_is_off() -> None:
    error = await refused(hs_token(), None)
    assert error.message.startswith("Incorrect API key provided: eyJhbG…")


async def test_a_token_signed_with_the_shared_secret_names_its_principal() -> None:
    principal = await authenticate(bearer(hs_token(clawdbot_rpm=5)), SNAPSHOT, PEPPER, verifier())
    assert isinstance(principal, TokenPrincipal)
    assert principal.subject == "alice@example.com" and principal.rpm_limit == 5
    assert principal.id == rate_identity(ISSUER, "alice@example.com")


async def test_refusals_say_why() -> None:
    tokens = verifier()
    assert "has expired" in (await refused(hs_token(exp=int(time.time()) - 60), tokens)).message
    none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    assert "signed with 'none'" in (await refused(none, tokens)).message
    # RS256 is not configured here: no key could check it, and the header says so first.
    rs = rs_token(SigningKey("k1"))
    assert (
        "signed with 'RS256', which this gateway does not accept"
        in (await refused(rs, tokens)).message
    )


async def test_a_verified_token_is_remembered_until_it_expires() -> None:
    tokens = verifier()
    token = hs_token(exp=int(time.time()) + 2)
    first = await tokens.verify(token)
    assert await tokens.verify(token) is first
    (digest,) = tokens._verified
    # As if its exp had passed: what was remembered is dropped and the token checked again.
    tokens._verified[digest] = replace(first, expires_at=time.time() - 1)
    again = await tokens.verify(token)
    assert again is not first and again == first  # verified again, not served from memory


async def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_KEPT", 20)
    tokens = verifier()
    for n in range(55):
        await tokens.verify(hs_token(sub=f"user{n}"))
        assert len(tokens._verified) <= 20
    kept = list(tokens._verified.items())
    for digest, principal in kept[:-5]:
        tokens._verified[digest] = replace(principal, expires_at=time.time() - 1)
    await tokens.verify(hs_token(sub="newcomer"))
    await tokens.verify(hs_token(sub="another"))
    # Full again: the expired went, not the live ones.
    assert len(tokens._verified) <= 7
    assert all(p.expires_at > time.time() for p in tokens._verified.values())
    assert {d for d, _ in kept[-5:]} <= set(tokens._verified)
