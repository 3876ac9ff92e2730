"""Authentication for the management API under /v1/admin: a staff API key
(`Authorization: Bearer ck-…` of a key marked staff) or a staff user's admin session.

Unlike the data plane, this checks keys against the database, not the routing snapshot: a
management call is rare, must see a revocation at once, and may use the ORM. Nothing is
written on the way (no `last_used_at`), so a management call costs one indexed read.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from gateway.keys import digest_matches, display_key, parse_key
from gateway.models import ApiKey

# Compared against when the prefix is unknown, so timing says nothing about which exist.
_NO_DIGEST = "0" * 64


class StaffApiKeyAuthentication(BaseAuthentication):
    """`Bearer ck-…` keys. Any live key authenticates (so a non-staff key gets 403, not 401);
    `IsStaff` then requires the key to be a staff key. Requests without a Bearer header are
    left to the next authenticator (the admin session)."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        scheme, _, raw = get_authorization_header(request).decode("latin-1").partition(" ")
        if scheme.lower() != self.keyword:
            return None
        raw = raw.strip()
        parsed = parse_key(raw)
        key = ApiKey.objects.filter(prefix=parsed.prefix).first() if parsed else None
        digest = key.digest if key is not None else _NO_DIGEST
        if not digest_matches(raw, digest, settings.SECRET_KEY) or key is None:
            raise AuthenticationFailed(
                f"Incorrect API key provided: {display_key(raw)}. "
                "It is unknown, revoked or expired."
            )
        if key.is_revoked:
            raise AuthenticationFailed(f"The API key {display_key(raw)} has been revoked.")
        if key.is_expired():
            raise AuthenticationFailed(f"The API key {display_key(raw)} has expired.")
        # The key, not its owner, carries the rights: a staff user's ordinary key stays
        # ordinary, so the request's user is anonymous.
        return AnonymousUser(), key

    def authenticate_header(self, request: Request) -> str:
        # Also makes DRF answer 401 (not 403) when no credentials came at all.
        return 'Bearer realm="clawdbot"'


class IsStaff(BasePermission):
    """A staff API key, or (without a key) an active staff user's session."""

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if isinstance(key, ApiKey):
            if not key.is_staff_key:
                raise PermissionDenied(
                    f"The API key {key.masked} is not a staff key. The management API needs "
                    "one: `clawdbot apikey create --name NAME --staff`."
                )
            return True
        user = request.user
        if not (user and user.is_authenticated):
            return False  # DRF turns this into 401 with the authenticate header
        if not (user.is_active and user.is_staff):
            raise PermissionDenied(
                f"The user {user.get_username()} is not staff; the management API needs a "
                "staff user or a staff API key."
            )
        return True
