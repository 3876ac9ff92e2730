"""Writes of the data plane's models: API keys (create, revoke; the secret exists only in the
return value) and degradation tier changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from alerts.events import tier_change
from alerts.services import notify
from gateway.keys import generate_key, hash_key
from gateway.models import ApiKey, TierChange
from nodes.models import ModelProfile
from nodes.routing_version import bump_after_commit


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str


def resolve_profiles(model_ids: Iterable[str]) -> list[ModelProfile]:
    wanted = sorted({m.strip() for m in model_ids if m.strip()})
    found = list(ModelProfile.objects.filter(model_id__in=wanted))
    missing = sorted(set(wanted) - {p.model_id for p in found})
    if missing:
        known = ", ".join(ModelProfile.objects.values_list("model_id", flat=True)) or "none yet"
        raise ValidationError(f"Unknown model(s): {', '.join(missing)}. Known models: {known}.")
    return found


def apikey_assign_secret(key: ApiKey) -> str:
    """Give an unsaved key a fresh prefix and digest; returns the one copy of the secret."""
    for _ in range(5):
        prefix, secret = generate_key()
        if not ApiKey.objects.filter(prefix=prefix).exists():
            key.prefix = prefix
            key.digest = hash_key(secret, settings.SECRET_KEY)
            return secret
    raise RuntimeError("could not find an unused key prefix")  # 36^8 prefixes: not reachable


@transaction.atomic
def apikey_create(
    *,
    name: str,
    owner: AbstractBaseUser | None = None,
    models: Iterable[str] = (),
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    expires_at: datetime | None = None,
    expires_in_days: int | None = None,
    staff: bool = False,
) -> CreatedKey:
    if not name.strip():
        raise ValidationError("A key needs a name.")
    if expires_in_days is not None:
        if expires_in_days <= 0:
            raise ValidationError("--expires-days must be a positive number of days.")
        expires_at = timezone.now() + timedelta(days=expires_in_days)
    profiles = resolve_profiles(models)
    key = ApiKey(
        name=name.strip(),
        owner=owner,  # type: ignore[misc]
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        expires_at=expires_at,
        is_staff_key=staff,
    )
    secret = apikey_assign_secret(key)
    key.full_clean()
    key.save()
    key.allowed_profiles.set(profiles)
    return CreatedKey(key=key, secret=secret)


def apikeys_revoke(*, key_ids: list[int]) -> int:
    """Revoke keys; returns how many were not revoked already. Gateways stop accepting them
    within a second (routing version bump)."""
    updated = ApiKey.objects.filter(pk__in=key_ids, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    bump_after_commit()
    return updated


def apikey_revoke(*, key: ApiKey) -> bool:
    """Revoke a key; False when it was already revoked."""
    updated = apikeys_revoke(key_ids=[key.pk])
    key.refresh_from_db(fields=["revoked_at"])
    return updated == 1


@transaction.atomic
def tier_change_record(
    *, before: int, after: int, error_rate: float, requests: int, failures: int, at: float
) -> TierChange:
    """Record a tier change and alert the channels that want `tier` events (after commit)."""
    change = TierChange.objects.create(
        at=datetime.fromtimestamp(at, tz=UTC),
        from_tier=before,
        to_tier=after,
        error_rate=error_rate,
        requests=requests,
        failures=failures,
    )
    notify(tier_change(before, after, error_rate, requests))
    return change
