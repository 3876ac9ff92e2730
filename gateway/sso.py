"""Single sign-on on /v1: what a JWT bearer token from an identity provider is allowed to do.
Pure: the policy read from settings, the shape that tells a token from a Clawdbot key, the
signature and claim checks (PyJWT, CPU only), and the principal a verified token's claims make.
Fetching the provider's keys is gateway.jwks; choosing the key and caching verified tokens is
gateway.auth."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from gateway.snapshot import KeyView

# Three base64url segments; the signature may be empty (alg "none"), so that such a token is
# refused as a token, with a reason, rather than as an unknown API key.
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MAX_TOKEN_CHARS = 16 * 1024
EVERY_MODEL = "*"


class TokenRejected(Exception):
    """A token that does not authenticate; the message says why, for the client."""


@dataclass(frozen=True)
class SsoPolicy:
    algorithms: frozenset[str]
    issuer: str = ""  # empty: any issuer
    audience: tuple[str, ...] = ()  # empty: any audience
    leeway_s: float = 30.0
    subject_claim: str = "sub"
    models_claim: str = "clawdbot_models"
    default_models: frozenset[str] | None = None  # None: every model
    groups_claim: str = "groups"
    group_models: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rpm_claim: str = "clawdbot_rpm"
    tpm_claim: str = "clawdbot_tpm"
    default_rpm: int | None = None
    default_tpm: int | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SsoPolicy:
        return cls(
            algorithms=frozenset(settings.CLAWDBOT_JWT_ALGORITHMS),
            issuer=settings.CLAWDBOT_JWT_ISSUER,
            audience=tuple(settings.CLAWDBOT_JWT_AUDIENCE),
            leeway_s=settings.CLAWDBOT_JWT_LEEWAY_S,
            subject_claim=settings.CLAWDBOT_JWT_SUBJECT_CLAIM,
            models_claim=settings.CLAWDBOT_JWT_MODELS_CLAIM,
            default_models=_models(settings.CLAWDBOT_JWT_DEFAULT_MODELS),
            groups_claim=settings.CLAWDBOT_JWT_GROUPS_CLAIM,
            group_models={
                group: frozenset(models)
                for group, models in settings.CLAWDBOT_JWT_GROUP_MODELS.items()
            },
            rpm_claim=settings.CLAWDBOT_JWT_RPM_CLAIM,
            tpm_claim=settings.CLAWDBOT_JWT_TPM_CLAIM,
            default_rpm=settings.CLAWDBOT_JWT_DEFAULT_RPM or None,
            default_tpm=settings.CLAWDBOT_JWT_DEFAULT_TPM or None,
        )


@dataclass(frozen=True, slots=True)
class TokenPrincipal:
    """Who a verified token speaks for, with what the data plane needs of a key: `id` names
    its rate-limit windows in Redis (never an API key's, which are numbers)."""

    id: str
    subject: str
    issuer: str
    allowed: frozenset[str] | None  # None: every model
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: float  # the token's exp, unix seconds
    prefix: str = ""  # no API key

    def may_use(self, model_id: str) -> bool:
        return self.allowed is None or model_id in self.allowed


# Whoever sent a /v1 request: a Clawdbot key or a token's principal.
Caller = KeyView | TokenPrincipal


def looks_like_jwt(raw: str) -> bool:
    # Counting dots first turns every Clawdbot key (none has a dot) away at C speed.
    return raw.count(".") == 2 and len(raw) <= MAX_TOKEN_CHARS and _SHAPE.fullmatch(raw) is not None


def rate_identity(issuer: str, subject: str) -> str:
    """The principal's name in Redis: a digest, so any issuer or subject (colons, globs, a
    kilobyte of text) makes a short key that cannot collide with another principal's."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:32]
    return f"jwt:{digest}"


def unverified_header(token: str) -> tuple[str, str | None]:
    """The token's alg and kid, read before its key is chosen."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"The bearer token is not a readable JWT: {exc}.") from None
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejected("The bearer token's header names no algorithm (alg).")
    kid = header.get("kid")
    return alg, kid if isinstance(kid, str) else None


def check_algorithm(alg: str, policy: SsoPolicy) -> None:
    if alg not in policy.algorithms:
        accepted = ", ".join(sorted(policy.algorithms))
        raise TokenRejected(
            f"The token is signed with {alg!r}, which this gateway does not accept "
            f"(it accepts {accepted})."
        )


def verify_claims(token: str, key: Any, alg: str, policy: SsoPolicy) -> dict[str, Any]:
    """The claims of a token whose signature `key` verifies with `alg` alone, with exp
    required and iss and aud checked when configured."""
    required = ["exp"]
    if policy.issuer:
        required.append("iss")
    if policy.audience:
        required.append("aud")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=list(policy.audience) or None,
            issuer=policy.issuer or None,
            leeway=policy.leeway_s,
            options={"require": required, "verify_aud": bool(policy.audience)},
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(_reason(exc, policy)) from None
    return claims


def _reason(exc: jwt.PyJWTError, policy: SsoPolicy) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The token has expired."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The token is not valid yet (its nbf or iat is in the future)."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The token has no {exc.claim!r} claim."
    if isinstance(exc, jwt.InvalidAudienceError):
        accepted = ", ".join(repr(a) for a in policy.audience)
        return f"The token's audience (aud) is not this gateway's ({accepted})."
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"The token's issuer (iss) is not {policy.issuer!r}."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The token's signature does not verify."
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"The token's algorithm does not match its key: {exc}."
    if isinstance(exc, jwt.DecodeError):
        return f"The bearer token is not a readable JWT: {exc}."
    return f"The token is not valid: {exc}."


def principal_from_claims(claims: Mapping[str, Any], policy: SsoPolicy) -> TokenPrincipal:
    """What a verified token may do: its subject, models and per-minute limits."""
    subject = claims.get(policy.subject_claim)
    if isinstance(subject, int) and not isinstance(subject, bool):
        subject = str(subject)
    if not isinstance(subject, str) or not subject:
        raise TokenRejected(
            f"The token's {policy.subject_claim!r} claim, which names who it is for, is "
            "missing or not a string."
        )
    issuer = claims.get("iss")
    issuer = issuer if isinstance(issuer, str) else ""
    return TokenPrincipal(
        id=rate_identity(issuer, subject),
        subject=subject,
        issuer=issuer,
        allowed=allowed_models(claims, policy),
        rpm_limit=_limit(claims, policy.rpm_claim, policy.default_rpm),
        tpm_limit=_limit(claims, policy.tpm_claim, policy.default_tpm),
        expires_at=float(claims["exp"]),
    )


def allowed_models(claims: Mapping[str, Any], policy: SsoPolicy) -> frozenset[str] | None:
    """The models claim and the models of every mapped group the token names, together; the
    configured default when the token says neither. None: every model."""
    granted: set[str] = set()
    spoken = False
    if claims.get(policy.models_claim) is not None:
        spoken = True
        granted.update(_names(claims[policy.models_claim], policy.models_claim, split=True))
    if policy.group_models and claims.get(policy.groups_claim) is not None:
        for group in _names(claims[policy.groups_claim], policy.groups_claim, split=False):
            if group in policy.group_models:
                spoken = True
                granted.update(policy.group_models[group])
    if not spoken:
        return policy.default_models
    return _models(granted)


def _models(names: Any) -> frozenset[str] | None:
    return None if EVERY_MODEL in names else frozenset(names)


def _names(value: Any, claim: str, *, split: bool) -> list[str]:
    """A claim listing names: a JSON list of strings, or one string (space-separated when
    `split`, as OAuth writes scopes)."""
    if isinstance(value, str):
        return value.split() if split else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TokenRejected(f"The token's {claim!r} claim must be a list of strings.")


def _limit(claims: Mapping[str, Any], claim: str, default: int | None) -> int | None:
    """A per-minute limit from its claim: a whole number, 0 for none; the default without it."""
    value = claims.get(claim)
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TokenRejected(f"The token's {claim!r} claim must be a whole number (0: no limit).")
    return value or None
