"""The identity provider's key set as a gateway process holds it, fetched from a real JWKS
server on 127.0.0.1: loaded once, found again on an unknown kid (at most once a cooldown, one
fetch for many requests), kept while the server is down, replaced whole when it changes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.auth import TokenVerifier
from gateway.errors import GatewayError
from gateway.jwks import Jwks
from gateway.sso import SsoPolicy, TokenPrincipal
from tests.gateway.identity import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JwksServer,
    SigningKey,
    claims,
    forge_hs256,
    public_pem,
    rs_token,
)

pytestmark = pytest.mark.slow  # a real HTTP server

POLICY = SsoPolicy(algorithms=frozenset({"HS256", "RS256"}), issuer=ISSUER, audience=(AUDIENCE,))
COOLDOWN_S = 0.2
K1, K2 = SigningKey("k1"), SigningKey("k2")


@pytest.fixture
def server() -> Iterator[JwksServer]:
    server = JwksServer(K1).start()
    yield server
    server.stop()


def verifier(url: str, timeout_s: float = 2.0) -> TokenVerifier:
    jwks = Jwks(url, refresh_s=300, cooldown_s=COOLDOWN_S, timeout_s=timeout_s)
    return TokenVerifier(POLICY, secret=SECRET, jwks=jwks)


async def refusal(tokens: TokenVerifier, token: str, status: int = 401) -> str:
    with pytest.raises(GatewayError) as caught:
        await tokens.verify(token)
    assert caught.value.status == status
    return caught.value.message


async def test_the_first_token_loads_the_set_and_repeats_cost_no_fetch(server: JwksServer) -> None:
    tokens = verifier(server.url)
    token = rs_token(K1)
    principal = await tokens.verify(token)
    assert isinstance(principal, TokenPrincipal) and principal.subject == "alice@example.com"
    assert await tokens.verify(token) is principal
    assert await tokens.verify(rs_token(K1, sub="bob")) is not None
    assert server.fetches == 1


async def test_a_rotated_set_is_fetched_on_an_unknown_kid(server: JwksServer) -> None:
    tokens = verifier(server.url)
    await tokens.jwks.refresh()  # type: ignore[union-attr]
    await asyncio.sleep(COOLDOWN_S)
    message = await refusal(tokens, rs_token(K2))  # fetched again: still not there
    assert "key id 'k2' is not in the identity provider's key set" in message
    server.serve(K1, K2)
    await asyncio.sleep(COOLDOWN_S)
    assert (await tokens.verify(rs_token(K2))).subject == "alice@example.com"
    assert server.fetches == 3


async def test_made_up_kids_fetch_at_most_once_a_cooldown_and_share_one_fetch(
    server: JwksServer,
) -> None:
    tokens = verifier(server.url)
    await tokens.jwks.refresh()  # type: ignore[union-attr]
    await asyncio.sleep(COOLDOWN_S)
    forged = [rs_token(K2, headers={"kid": f"made-up-{n}"}) for n in range(20)]
    results = await asyncio.gather(*(tokens.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, GatewayError) and r.status == 401 for r in results)
    for token in forged:
        await refusal(tokens, token)
    assert server.fetches == 2
    assert tokens.jwks._keys == {}  # type: ignore[union-attr]  # unknown kids are not kept


async def test_a_withdrawn_key_stops_verifying_even_tokens_verified_before(
    server: JwksServer,
) -> None:
    tokens = verifier(server.url)
    token = rs_token(K1)
    await tokens.verify(token)
    server.serve(K2)
    await tokens.jwks.refresh()  # type: ignore[union-attr]  # the background refresh
    assert "key id 'k1' is not in" in await refusal(tokens, token)


async def test_the_loaded_set_keeps_working_while_the_server_is_down(server: JwksServer) -> None:
    tokens = verifier(server.url)
    await tokens.verify(rs_token(K1))
    server.stop()
    await asyncio.sleep(COOLDOWN_S)
    await tokens.jwks.refresh()  # type: ignore[union-attr]
    assert tokens.jwks.error  # type: ignore[union-attr]
    # A token never seen before, signed with a key of the loaded set.
    assert (await tokens.verify(rs_token(K1, sub="carol"))).subject == "carol"
    await asyncio.sleep(COOLDOWN_S)
    message = await refusal(tokens, rs_token(K2))
    assert "key id 'k2' is not in the identity provider's key set (fetching the set again" in (
        message
    )
    server.start()
    await asyncio.sleep(COOLDOWN_S)
    await tokens.jwks.refresh()  # type: ignore[union-attr]
    assert tokens.jwks.error == ""  # type: ignore[union-attr]


async def test_no_set_ever_loaded_is_a_503_without_a_fetch_per_request() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks"  # nothing listens there
    tokens = verifier(url)
    message = await refusal(tokens, rs_token(K1), status=503)
    assert "signing keys (JWKS) cannot be fetched" in message
    started = time.monotonic()
    for _ in range(20):
        await refusal(tokens, rs_token(K1), status=503)
    assert time.monotonic() - started < COOLDOWN_S  # within the cooldown: no new attempt
    # Tokens signed with the shared secret do not need the provider at all.
    assert await tokens.verify(forge_hs256(claims(), SECRET.encode()))


async def test_a_server_that_never_answers_costs_the_timeout_at_most() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are accepted by the kernel and never answered
        tokens = verifier(f"http://127.0.0.1:{silent.getsockname()[1]}/jwks", timeout_s=0.3)
        started = time.monotonic()
        await refusal(tokens, rs_token(K1), status=503)
        assert time.monotonic() - started < 1.0
        assert tokens.jwks.error == "no answer within 0.3 s"  # type: ignore[union-attr]


async def test_hs_and_rs_cannot_stand_in_for_each_other(server: JwksServer) -> None:
    tokens = verifier(server.url)
    # HS256 keyed with the provider's public key, naming its kid: HS256 is checked with the
    # shared secret only, never with a key from the set.
    forged = forge_hs256(claims(), public_pem(K1), kid="k1")
    assert "signature does not verify" in await refusal(tokens, forged)
    # RS256 in the header over an HMAC made with the shared secret: checked by the RSA key.
    head, body, _ = rs_token(K1).split(".")
    hmac_signed = forge_hs256(claims(), SECRET.encode()).split(".")[2]
    assert "signature does not verify" in await refusal(tokens, f"{head}.{body}.{hmac_signed}")
