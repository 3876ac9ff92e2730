"""Single sign-on end to end: a real gateway process configured with a shared secret and a
real JWKS server on 127.0.0.1, in front of a simulated node; tokens signed in the test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import openai
import pytest
import redis
from django.conf import settings
from openai.types.chat import ChatCompletionMessageParam

from clawdbot_site import redis_keys
from gateway import tasks
from gateway.models import RequestLog
from gateway.sso import rate_identity
from nodes.models import Deployment, ModelProfile
from tests.conftest import clean_gateway_state
from tests.gateway.identity import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JwksServer,
    SigningKey,
    claims,
    forge_hs256,
    hs_token,
    public_pem,
    rs_token,
    unsigned_token,
)
from tests.gateway.world import World, build
from tests.gateways import GatewayProcess
from tests.simulators import SimProcess

pytestmark = pytest.mark.slow  # real servers and processes

SIM = ("--api", "ollama", "--model", "qwen3:32b", "--zero-latency")
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
COOLDOWN_S = 0.5
K1, K2, K3 = SigningKey("k1"), SigningKey("k2"), SigningKey("k3")


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksServer]:
    server = JwksServer(K1).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sso_gateway_process(
    django_db_setup: None, django_db_blocker: Any, idp: JwksServer
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        env={
            "CLAWDBOT_JWT_SECRET": SECRET,
            "CLAWDBOT_JWT_JWKS_URL": idp.url,
            "CLAWDBOT_JWT_ISSUER": ISSUER,
            "CLAWDBOT_JWT_AUDIENCE": AUDIENCE,
            "CLAWDBOT_JWT_ALGORITHMS": "HS256,RS256",
            "CLAWDBOT_JWT_JWKS_COOLDOWN_S": str(COOLDOWN_S),
            "CLAWDBOT_JWT_GROUP_MODELS": '{"ml-team": ["qwen3-32b"]}',
        }
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def world(
    sso_gateway_process: GatewayProcess,
    transactional_db: None,
    simulator: Callable[..., SimProcess],
    idp: JwksServer,
) -> Iterator[World]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    clean_gateway_state(client)
    idp.serve(K1)
    yield build(sso_gateway_process, {"gpu1": simulator(*SIM)})
    idp.serve(K1)
    if idp._server is None:
        idp.start()
    clean_gateway_state(client)
    client.close()


def chat(world: World, token: str, model: str = "qwen3-32b") -> httpx.Response:
    return httpx.post(
        world.base_url + "/chat/completions",
        headers=world.headers(token),
        json={"model": model, "messages": HELLO, "max_tokens": 3},
        timeout=20,
    )


def models(world: World, token: str) -> list[str]:
    client = openai.OpenAI(base_url=world.base_url, api_key=token, max_retries=0)
    return [m.id for m in client.models.list()]


def test_a_token_signed_with_the_shared_secret_chats_through_the_openai_client(
    world: World,
) -> None:
    client = openai.OpenAI(base_url=world.base_url, api_key=hs_token(), max_retries=0)
    answer = client.chat.completions.create(model="qwen3-32b", messages=HELLO)
    assert answer.object == "chat.completion" and answer.choices[0].message.content
    assert [m.id for m in client.models.list()] == ["qwen3-32b"]


async def test_a_token_signed_with_a_key_of_the_providers_set_streams(world: World) -> None:
    client = openai.AsyncOpenAI(base_url=world.base_url, api_key=rs_token(K1), max_retries=0)
    stream = await client.chat.completions.create(
        model="qwen3-32b", messages=HELLO, stream=True, max_tokens=4
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()
    assert len(text.split()) == 4


def test_a_clawdbot_key_works_beside_single_sign_on(world: World) -> None:
    assert chat(world, world.key).status_code == 200


def test_refused_tokens_are_401_in_the_openai_shape_with_the_reason(world: World) -> None:
    head, body, _ = rs_token(K1).split(".")
    hmac_signature = hs_token().split(".")[2]
    tampered = rs_token(K1).split(".")
    tampered[1] = rs_token(K1, sub="mallory").split(".")[1]
    cases = {
        "expired": (hs_token(exp=int(time.time()) - 120), "The token has expired."),
        "wrong issuer": (rs_token(K1, iss="https://evil.example.com/"), "issuer (iss) is not"),
        "wrong audience": (hs_token(aud="another-app"), "audience (aud) is not this gateway's"),
        "no exp": (hs_token(exp=None), "no 'exp' claim"),
        "bad signature": (".".join(tampered), "signature does not verify"),
        "wrong secret": (hs_token(secret="x" * 40), "signature does not verify"),
        "alg none": (
            unsigned_token(),
            "signed with 'none', which this gateway does not accept (it accepts HS256, RS256)",
        ),
        "HS256 keyed with the provider's public key": (
            forge_hs256(claims(), public_pem(K1), kid="k1"),
            "signature does not verify",
        ),
        "RS256 header over an HMAC": (f"{head}.{body}.{hmac_signature}", "does not verify"),
        "an algorithm not configured": (
            jwt.encode(claims(), SECRET, algorithm="HS512"),
            "signed with 'HS512'",
        ),
        "no subject": (hs_token(sub=None), "'sub' claim"),
    }
    wrong = {}
    for name, (token, reason) in cases.items():
        answer = chat(world, token)
        error = answer.json().get("error", {})
        if not (
            answer.status_code == 401
            and error.get("code") == "invalid_api_key"
            and error.get("type") == "invalid_request_error"
            and reason in error.get("message", "")
            and answer.headers.get("x-should-retry") == "false"
            and "Traceback" not in answer.text
        ):
            wrong[name] = (answer.status_code, answer.text)
    assert wrong == {}
    with pytest.raises(openai.AuthenticationError, match="has expired"):
        models(world, hs_token(exp=int(time.time()) - 120))


def test_an_unknown_kid_is_refused_until_the_provider_rotates_then_accepted(
    world: World, idp: JwksServer
) -> None:
    token = rs_token(K2)
    refused = chat(world, token)
    assert refused.status_code == 401
    assert "key id 'k2' is not in the identity provider's key set" in refused.text
    idp.serve(K1, K2)
    time.sleep(COOLDOWN_S)  # the refusal fetched the set; the next fetch may come after this
    assert chat(world, token).status_code == 200
    assert chat(world, rs_token(K1)).status_code == 200  # the old key still in the set


def test_the_providers_keys_keep_working_while_its_server_is_down(
    world: World, idp: JwksServer
) -> None:
    assert chat(world, rs_token(K1)).status_code == 200  # the set is loaded
    idp.stop()
    time.sleep(COOLDOWN_S)
    refused = chat(world, rs_token(K3))  # unknown: a fetch is tried, and fails
    assert refused.status_code == 401
    assert "(fetching the set again failed:" in refused.json()["error"]["message"]
    # A token never seen before, signed with a key of the set loaded before the outage.
    assert chat(world, rs_token(K1, sub="erin@example.com")).status_code == 200


def test_models_follow_the_token_s_claims_as_they_follow_a_key(world: World) -> None:
    small = ModelProfile.objects.create(
        model_id="small", upstream_model="qwen3:32b", context_window=4096, max_output_tokens=512
    )
    Deployment.objects.create(node=world.nodes["gpu1"], profile=small)
    world.gateway.wait_for_config()
    assert models(world, hs_token()) == ["qwen3-32b", "small"]  # no claim: every model
    only_small = hs_token(clawdbot_models=["small"])
    assert models(world, only_small) == ["small"]
    refused = chat(world, only_small)
    assert refused.status_code == 404
    assert refused.json()["error"] == {
        "message": "The model `qwen3-32b` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert chat(world, only_small, model="small").status_code == 200
    in_group = rs_token(K1, groups=["ml-team", "unmapped"])
    assert models(world, in_group) == ["qwen3-32b"]
    assert chat(world, in_group, model="small").status_code == 404


def test_the_rpm_claim_limits_the_subject_across_its_tokens(world: World) -> None:
    first = chat(world, hs_token(clawdbot_rpm=2))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert chat(world, hs_token(clawdbot_rpm=2)).status_code == 200
    refused = chat(world, hs_token(clawdbot_rpm=2))  # a new token, the same subject
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for this token's subject: 2 requests")
    assert chat(world, hs_token(sub="frank@example.com", clawdbot_rpm=2)).status_code == 200
    # The windows are the subject's, named apart from any key's.
    identity = rate_identity(ISSUER, "alice@example.com")
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.keys(redis_keys.rate_windows("r", identity))


def test_the_request_log_names_the_subject(world: World) -> None:
    assert chat(world, rs_token(K1, sub="grace@example.com")).status_code == 200
    assert chat(world, hs_token(exp=int(time.time()) - 120)).status_code == 401
    assert chat(world, world.key).status_code == 200
    deadline = time.monotonic() + 10
    while RequestLog.objects.count() < 3 and time.monotonic() < deadline:
        tasks.flush_request_logs()
        time.sleep(0.05)  # bounded: entries are written as each request closes
    rows = {(r.status, r.subject, r.key_prefix != "") for r in RequestLog.objects.all()}
    assert rows == {(200, "grace@example.com", False), (401, "", False), (200, "", True)}


def test_a_token_is_an_unknown_api_key_while_single_sign_on_is_off(
    gateway: GatewayProcess,
) -> None:
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {hs_token()}"},
        json={"model": "qwen3-32b", "messages": HELLO},
        timeout=20,
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["message"].startswith("Incorrect API key provided: eyJhbG…")
