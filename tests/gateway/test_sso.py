"""Single sign-on's pure decisions: which bearer strings are tokens, what a token's claims
allow, and the signature and claim checks, with keys made in the test (no I/O)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway.jwks import JwksError, KeySet, parse_jwks, signing_key
from gateway.sso import (
    SsoPolicy,
    TokenRejected,
    allowed_models,
    check_algorithm,
    looks_like_jwt,
    principal_from_claims,
    rate_identity,
    unverified_header,
    verify_claims,
)
from tests.gateway.identity import (
    AUDIENCE,
    ISSUER,
    SECRET,
    SigningKey,
    claims,
    forge_hs256,
    hs_token,
    public_pem,
    rs_token,
    unsigned_token,
)

POLICY = SsoPolicy(
    algorithms=frozenset({"HS256", "RS256"}), issuer=ISSUER, audience=(AUDIENCE,), leeway_s=5
)
KEY = SigningKey("k1")


def test_tokens_and_keys_are_told_apart_by_shape() -> None:
    assert looks_like_jwt(hs_token())
    assert looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")  # alg none: no signature
    assert not looks_like_jwt("ck-abcdefgh-" + "x" * 40)
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a=.b.c")
    assert not looks_like_jwt("a.b.c" + "c" * 20_000)


def test_rate_identities_are_short_and_never_collide_or_look_like_key_ids() -> None:
    one = rate_identity("https://idp/", "alice")
    assert one.startswith("jwt:") and len(one) == 36
    assert one == rate_identity("https://idp/", "alice")
    assert rate_identity("a:b", "c") != rate_identity("a", "b:c")
    assert rate_identity("https://idp/", "bob") != one


def test_a_principal_from_claims() -> None:
    principal = principal_from_claims(claims(clawdbot_rpm=60, clawdbot_tpm="5000"), POLICY)
    assert principal.subject == "alice@example.com" and principal.issuer == ISSUER
    assert principal.id == rate_identity(ISSUER, "alice@example.com")
    assert (principal.rpm_limit, principal.tpm_limit) == (60, 5000)
    assert principal.allowed is None and principal.may_use("anything")
    assert principal.prefix == ""
    assert principal.expires_at > time.time()


def test_the_subject_claim_is_configurable_and_required() -> None:
    by_email = replace(POLICY, subject_claim="email")
    assert principal_from_claims(claims(email="a@x"), by_email).subject == "a@x"
    assert principal_from_claims(claims(sub=42), POLICY).subject == "42"
    for bad in ({"sub": None}, {"sub": ""}, {"sub": ["alice"]}, {"sub": True}, {}):
        token_claims = {k: v for k, v in claims().items() if k != "sub"} | bad
        with pytest.raises(TokenRejected, match="'sub' claim"):
            principal_from_claims(token_claims, POLICY)


@pytest.mark.parametrize(
    ("token_claims", "allowed"),
    [
        ({}, None),  # the default: every model
        ({"clawdbot_models": ["a", "b"]}, {"a", "b"}),
        ({"clawdbot_models": "a b"}, {"a", "b"}),  # space-separated, as scopes are
        ({"clawdbot_models": []}, set()),  # said, and says nothing is allowed
        ({"clawdbot_models": ["a", "*"]}, None),
        ({"groups": ["ml-team"]}, {"qwen3-32b", "llama3-8b"}),
        ({"groups": "ml-team"}, {"qwen3-32b", "llama3-8b"}),  # one group as a string
        ({"groups": ["ml-team"], "clawdbot_models": ["a"]}, {"a", "qwen3-32b", "llama3-8b"}),
        ({"groups": ["admins", "ml-team"]}, None),
        ({"groups": ["marketing"]}, None),  # no mapped group: the default
    ],
)
def test_allowed_models(token_claims: dict[str, Any], allowed: set[str] | None) -> None:
    policy = replace(
        POLICY,
        group_models={
            "ml-team": frozenset({"qwen3-32b", "llama3-8b"}),
            "admins": frozenset({"*"}),
        },
    )
    assert allowed_models(token_claims, policy) == (None if allowed is None else frozenset(allowed))


def test_the_default_models_apply_when_the_token_says_nothing() -> None:
    only = replace(POLICY, default_models=frozenset({"small"}))
    assert allowed_models({}, only) == {"small"}
    assert allowed_models({"clawdbot_models": ["big"]}, only) == {"big"}
    nothing = replace(POLICY, default_models=frozenset())
    assert not principal_from_claims(claims(), nothing).may_use("small")


@pytest.mark.parametrize("bad", [42, [1, 2], {"a": 1}])
def test_a_malformed_models_or_groups_claim_refuses_the_token(bad: Any) -> None:
    with pytest.raises(TokenRejected, match="'clawdbot_models' claim must be a list"):
        allowed_models({"clawdbot_models": bad}, POLICY)
    mapped = replace(POLICY, group_models={"g": frozenset({"a"})})
    with pytest.raises(TokenRejected, match="'groups' claim must be a list"):
        allowed_models({"groups": bad}, mapped)


def test_limits_from_claims_and_defaults() -> None:
    defaults = replace(POLICY, default_rpm=10, default_tpm=None)
    principal = principal_from_claims(claims(), defaults)
    assert (principal.rpm_limit, principal.tpm_limit) == (10, None)
    assert principal_from_claims(claims(clawdbot_rpm=0), defaults).rpm_limit is None
    assert principal_from_claims(claims(clawdbot_rpm="7"), defaults).rpm_limit == 7
    for bad in (-1, 1.5, True, "ten", "²"):
        with pytest.raises(TokenRejected, match="'clawdbot_rpm' claim must be a whole number"):
            principal_from_claims(claims(clawdbot_rpm=bad), defaults)


def test_only_the_configured_algorithms_are_accepted() -> None:
    check_algorithm("RS256", POLICY)
    for alg in ("none", "HS512", "ES256", "PS256"):
        with pytest.raises(TokenRejected, match=f"signed with '{alg}'.*accepts HS256, RS256"):
            check_algorithm(alg, POLICY)
    none_token = unsigned_token()
    assert unverified_header(none_token) == ("none", None)
    with pytest.raises(TokenRejected, match="not a readable JWT"):
        unverified_header("e30.e30.!")


def test_a_valid_token_verifies_with_its_key_and_algorithm_only() -> None:
    assert verify_claims(hs_token(), SECRET, "HS256", POLICY)["sub"] == "alice@example.com"
    key = signing_key(parse_jwks(_jwks(KEY)), "k1", "RS256")
    assert verify_claims(rs_token(KEY), key, "RS256", POLICY)["sub"] == "alice@example.com"
    other_secret = "another-secret-of-thirty-two-chars!"
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_claims(hs_token(secret=other_secret), SECRET, "HS256", POLICY)
    tampered = rs_token(KEY).split(".")
    tampered[1] = hs_token(sub="mallory").split(".")[1]
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_claims(".".join(tampered), key, "RS256", POLICY)
    # The classic confusion: "HS256" keyed with the provider's public key. The RSA key is
    # bound to RS256, so it cannot be made to check an HMAC; the shared secret refuses it.
    forged = forge_hs256(claims(), public_pem(KEY), kid="k1")
    with pytest.raises(TokenRejected, match="algorithm does not match its key"):
        verify_claims(forged, key, "HS256", POLICY)
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_claims(forged, SECRET, "HS256", POLICY)


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        # exp and nbf as seconds from now, resolved when the test runs: a time taken at
        # collection has drifted by then (a full suite runs for over ten minutes).
        ({"exp": -60}, "has expired"),
        ({"iss": "https://evil.example.com/"}, "issuer \\(iss\\) is not"),
        ({"iss": None}, "no 'iss' claim"),
        ({"aud": "another-app"}, "audience \\(aud\\) is not this gateway's \\('clawdbot'\\)"),
        ({"aud": None}, "no 'aud' claim"),
        ({"exp": None}, "no 'exp' claim"),
        ({"nbf": 600}, "not valid yet"),
    ],
)
def test_claims_that_refuse_a_token(token_claims: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    for name in ("exp", "nbf"):
        if isinstance(token_claims.get(name), int):
            token_claims = {**token_claims, name: now + token_claims[name]}
    with pytest.raises(TokenRejected, match=reason):
        verify_claims(hs_token(**token_claims), SECRET, "HS256", POLICY)


def test_leeway_and_unconfigured_issuer_and_audience() -> None:
    just_expired = hs_token(exp=int(time.time()) - 2)
    assert verify_claims(just_expired, SECRET, "HS256", POLICY)  # within the 5 s leeway
    lax = SsoPolicy(algorithms=frozenset({"HS256"}))
    token = hs_token(iss="anyone", aud="anything")
    assert verify_claims(token, SECRET, "HS256", lax)["iss"] == "anyone"


def _jwks(*keys: SigningKey, extra: list[Any] | None = None) -> bytes:
    return orjson.dumps({"keys": [k.jwk() for k in keys] + (extra or [])})


def test_a_key_set_keeps_signing_keys_only() -> None:
    enc = {**SigningKey("enc").jwk(), "use": "enc"}
    oct_key = {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}
    key_set = parse_jwks(_jwks(KEY, extra=[enc, oct_key, "junk", {**KEY.jwk(), "kid": None}]))
    assert set(key_set.by_kid) == {"k1"} and len(key_set.without_kid) == 1
    for document in (b"not json", b"[]", b'{"keys": {}}', b'{"keys": [{"kty": "oct"}]}'):
        with pytest.raises(JwksError):
            parse_jwks(document)


def test_a_key_verifies_only_tokens_of_its_own_family_and_algorithm() -> None:
    key_set = parse_jwks(_jwks(KEY))
    assert signing_key(key_set, "k1", "RS256") is not None
    assert signing_key(key_set, "unknown", "RS256") is None
    with pytest.raises(TokenRejected, match="algorithm ES256 is not its key 'k1''s \\(RS256\\)"):
        signing_key(key_set, "k1", "ES256")
    with pytest.raises(TokenRejected, match="algorithm PS256 is not its key 'k1''s \\(RS256\\)"):
        signing_key(key_set, "k1", "PS256")  # the key says RS256


def test_a_token_without_kid_needs_a_set_with_one_key_of_its_family() -> None:
    one = parse_jwks(_jwks(KEY))
    assert signing_key(one, None, "RS256") is not None
    two = parse_jwks(_jwks(KEY, SigningKey("k2")))
    assert signing_key(two, None, "RS256") is None
    assert KeySet() == KeySet()
