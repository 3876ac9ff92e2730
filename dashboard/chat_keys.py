"""The chat page's API key: the page talks to the same /v1 data plane as any client, with a
key of its own that the server issues to the logged-in user's session.

The key is short-lived (CHAT_KEY_TTL, and never past the session's own expiry), allowed only
the models the user may use (`models_for`), owned by the user, and revoked when the session
logs out. A page load reuses the session's key while it has more than RENEW_BEFORE left and
the user's models are unchanged, else issues a new one and revokes the old. The secret is
kept in the session (server-side, like the session itself) so a reload can hand it back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.db.models import Q

from dashboard.models import ChatKey
from gateway.models import ApiKey
from gateway.services import apikey_create, apikeys_revoke
from nodes.models import ModelProfile

CHAT_KEY_TTL = timedelta(hours=1)
RENEW_BEFORE = timedelta(minutes=5)
CHAT_RPM = 60  # a person typing; generous, and a bound on a leaked page key
SESSION_SLOT = "clawdbot_chat_key"


@dataclass(frozen=True)
class Grant:
    """What a user may use on the chat page: every model (None) or these model ids."""

    models: frozenset[str] | None

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


def grant_from_keys(is_staff: bool, key_models: list[frozenset[str]]) -> Grant:
    """Staff may use every model. Anyone else may use the models of the API keys issued to
    them (an unrestricted key: every model); with no key, none (pure)."""
    if is_staff:
        return Grant(None)
    if any(not models for models in key_models):
        return Grant(None)
    return Grant(frozenset().union(*key_models))


def models_for(user: User | AnonymousUser, now: datetime) -> Grant:
    """The user's grant, read from their active keys (chat keys excluded): two queries."""
    if not isinstance(user, User):
        return Grant(frozenset())
    if user.is_staff:
        return Grant(None)
    chat_key_ids = ChatKey.objects.filter(user=user).values("key_id")
    keys = (
        ApiKey.objects.filter(owner=user, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .exclude(pk__in=chat_key_ids)
        .prefetch_related("allowed_profiles")
    )
    return grant_from_keys(
        False, [frozenset(p.model_id for p in key.allowed_profiles.all()) for key in keys]
    )


def chat_profiles(grant: Grant) -> list[ModelProfile]:
    profiles = ModelProfile.objects.order_by("model_id")
    if grant.models is not None:
        profiles = profiles.filter(model_id__in=sorted(grant.models))
    return list(profiles)


@dataclass(frozen=True)
class IssuedKey:
    secret: str
    prefix: str
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.secret,
            "prefix": self.prefix,
            "expires_at": self.expires_at.isoformat(),
        }


def _granted(grant: Grant) -> list[str] | None:
    return None if grant.models is None else sorted(grant.models)


def session_key_for(*, user: User, session: SessionBase, grant: Grant, now: datetime) -> IssuedKey:
    """The session's chat key for this grant: the one it holds, or a new one. A grant of no
    models gets no key (a key with no models would allow every model)."""
    if grant.models is not None and not grant.models:
        raise ValueError("no models granted: no chat key")
    held = session.get(SESSION_SLOT)
    if isinstance(held, dict) and _still_good(held, grant, now):
        return IssuedKey(
            secret=held["secret"],
            prefix=held["prefix"],
            expires_at=datetime.fromisoformat(held["expires_at"]),
        )
    if session.session_key is None:
        session.save()  # a key is bound to a session id, so the session needs one now
    issued = _issue(user=user, session=session, grant=grant, now=now)
    if isinstance(held, dict) and isinstance(held.get("id"), int):
        apikeys_revoke(key_ids=[held["id"]])
    return issued


def _still_good(held: dict[str, Any], grant: Grant, now: datetime) -> bool:
    try:
        expires_at = datetime.fromisoformat(held["expires_at"])
    except (KeyError, TypeError, ValueError):
        return False
    if expires_at - RENEW_BEFORE <= now or held.get("grant", "") != _granted(grant):
        return False
    # Revoked by an admin (or a logout elsewhere)? One indexed lookup.
    key_id = held.get("id")
    return isinstance(key_id, int) and (
        ApiKey.objects.filter(pk=key_id, revoked_at__isnull=True, expires_at__gt=now).exists()
    )


@transaction.atomic
def _issue(*, user: User, session: SessionBase, grant: Grant, now: datetime) -> IssuedKey:
    expires_at = min(now + CHAT_KEY_TTL, session.get_expiry_date())
    created = apikey_create(
        name=f"console chat: {user.get_username()}"[:100],
        owner=user,
        models=_granted(grant) or (),
        rpm_limit=CHAT_RPM,
        expires_at=expires_at,
    )
    assert session.session_key is not None
    ChatKey.objects.create(key=created.key, user=user, session_key=session.session_key)
    session[SESSION_SLOT] = {
        "id": created.key.pk,
        "prefix": created.key.prefix,
        "secret": created.secret,
        "expires_at": expires_at.isoformat(),
        "grant": _granted(grant),
    }
    return IssuedKey(created.secret, created.key.prefix, expires_at)


def revoke_session_keys(session_key: str | None) -> int:
    """Revoke every chat key of a session (at logout); returns how many were live."""
    if not session_key:
        return 0
    ids = list(
        ChatKey.objects.filter(session_key=session_key, key__revoked_at__isnull=True).values_list(
            "key_id", flat=True
        )
    )
    return apikeys_revoke(key_ids=ids) if ids else 0


def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_out receiver (connected in dashboard.apps)."""
    if request is not None and hasattr(request, "session"):
        revoke_session_keys(request.session.session_key)
