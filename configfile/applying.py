"""Making the database match a config file: every value checked by the models' own
validation first (errors named by their path in the file), then every change in one
transaction. Gateways pick the new routing config up after the commit (the models' save
signals bump the routing version)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from configfile import current
from configfile.changes import Change, plan
from configfile.document import (
    NODE_FIELDS,
    PROFILE_FIELDS,
    ConfigError,
    Desired,
    check,
)
from gateway.models import ApiKey
from gateway.services import apikey_assign_secret, apikeys_revoke
from nodes.load_jobs import schedule_prefetch_warmup
from nodes.models import Deployment, ModelProfile, Node
from nodes.placement import vram_shortfall


@dataclass(frozen=True)
class Issued:
    name: str
    secret: str


def changes_for(
    desired: Desired, *, prune: bool, problems: list[str] | None = None
) -> list[Change]:
    """What applying would do; ConfigError naming each bad value by its path, together with
    `problems` already found in the document's shape (`document.survey`)."""
    _check_values(desired, problems or [])
    revoked = frozenset(
        ApiKey.objects.filter(revoked_at__isnull=False).values_list("prefix", flat=True)
    )
    return plan(check(current.document()), desired, prune=prune, revoked=revoked)


def _messages(exc: ValidationError, at: str) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{at}.{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items()]
    return [f"{at}: {' '.join(exc.messages)}"]


def _check_values(desired: Desired, found: list[str]) -> None:
    """The models' own validation of every value, skipping entries whose shape was already
    found wrong (their fields may be of the wrong type); ConfigError with all problems."""
    problems = list(found)

    def flawed(at: str) -> bool:
        return any(p.startswith((at + ".", at + ":")) for p in found)

    for model_id, want in desired.profiles.items():
        if flawed(want["at"]):
            continue
        profile = ModelProfile(
            model_id=model_id, **{f: want[f] for f in PROFILE_FIELDS if f != "fallback"}
        )
        try:
            profile.full_clean(exclude=["fallback"], validate_unique=False)
        except ValidationError as exc:
            problems += _messages(exc, want["at"])
    for name, want in desired.nodes.items():
        if flawed(want["at"]):
            continue
        try:
            Node(name=name, **{f: want[f] for f in NODE_FIELDS}).full_clean(validate_unique=False)
        except ValidationError as exc:
            problems += _messages(exc, want["at"])
    for (node_name, model_id), want in desired.deployments.items():
        if model_id not in desired.profiles or any(
            flawed(at)
            for at in (want["at"], desired.nodes[node_name]["at"], desired.profiles[model_id]["at"])
        ):
            continue
        try:
            Deployment(weight_override=want["weight_override"]).full_clean(
                exclude=["node", "profile"], validate_unique=False
            )
        except ValidationError as exc:
            problems += _messages(exc, want["at"])
        node_spec, profile_spec = desired.nodes[node_name], desired.profiles[model_id]
        shortfall = vram_shortfall(
            ModelProfile(model_id=model_id, min_vram_gb=profile_spec["min_vram_gb"]),
            Node(
                name=node_name,
                gpu_count=node_spec["gpu_count"],
                vram_gb_per_gpu=node_spec["vram_gb_per_gpu"],
            ),
        )
        if shortfall is not None:
            problems.append(f"{want['at']}.profile: {shortfall}")
    users = get_user_model()
    for want in desired.keys:
        if flawed(want["at"]):
            continue
        owner = want["owner"]
        if owner is not None and not users.objects.filter(username=owner).exists():
            problems.append(f"{want['at']}.owner: no user named {owner!r}")
        key = ApiKey(
            name=want["name"],
            prefix="x",
            digest="x",
            rpm_limit=want["rpm_limit"],
            tpm_limit=want["tpm_limit"],
        )
        try:
            key.full_clean(exclude=["owner", "allowed_profiles"], validate_unique=False)
        except ValidationError as exc:
            problems += _messages(exc, want["at"])
    if problems:
        raise ConfigError(problems)


# Taken for the whole apply on PostgreSQL, so two applies run one after the other.
ADVISORY_LOCK = 0x636C6177  # "claw"


class ChangedMeanwhile(ConfigError):
    pass


@transaction.atomic
def apply(changes: list[Change], desired: Desired, *, prune: bool) -> list[Issued]:
    """Apply `changes` (what `changes_for(desired)` showed); returns the keys issued, with
    their one copy of the secret. All or nothing. The plan is made again under the lock: if
    the configuration changed since it was shown, nothing is applied."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
    if changes_for(desired, prune=prune) != changes:
        raise ChangedMeanwhile(
            ["the configuration changed while this apply was being prepared: run it again"]
        )
    profiles = {p.model_id: p for p in ModelProfile.objects.select_for_update()}
    nodes = {n.name: n for n in Node.objects.select_for_update()}
    for change in changes:
        if change.kind == "profile" and change.action in ("create", "update"):
            profile = profiles.get(change.name) or ModelProfile(model_id=change.name)
            for name in PROFILE_FIELDS:
                if name != "fallback":
                    setattr(profile, name, change.desired[name])
            profile.save()
            profiles[change.name] = profile
    for model_id, want in desired.profiles.items():  # once every profile exists
        profile = profiles[model_id]
        fallback = profiles[want["fallback"]] if want["fallback"] else None
        if profile.fallback_id != (fallback.pk if fallback else None):
            profile.fallback = fallback
            profile.save(update_fields=["fallback", "updated_at"])
    issued: list[Issued] = []
    added: list[int] = []
    for change in changes:
        if change.action in ("create", "update") and change.kind == "node":
            node = nodes.get(change.name) or Node(name=change.name)
            for name in NODE_FIELDS:
                setattr(node, name, change.desired[name])
            node.save()
            nodes[change.name] = node
        elif change.action in ("create", "update") and change.kind == "deployment":
            want = change.desired
            deployment, created = Deployment.objects.update_or_create(
                node=nodes[want["node"]],
                profile=profiles[want["profile"]],
                defaults={"weight_override": want["weight_override"]},
            )
            if created:
                added.append(deployment.pk)
        elif change.kind == "key":
            issued += _key(change, profiles)
        elif change.action == "delete" and change.kind == "deployment":
            node_name, model_id = change.name.split(" ← ")
            Deployment.objects.filter(node__name=node_name, profile__model_id=model_id).delete()
    for change in changes:  # last: what the file no longer names (--prune)
        if change.action == "delete" and change.kind == "node":
            nodes[change.name].delete()
        elif change.action == "delete" and change.kind == "profile":
            profiles[change.name].delete()
    schedule_prefetch_warmup(added)  # new deployments of prefetch profiles, after the commit
    return issued


def _key(change: Change, profiles: dict[str, ModelProfile]) -> list[Issued]:
    if change.action == "revoke":
        key = ApiKey.objects.get(prefix=change.prefix)
        apikeys_revoke(key_ids=[key.pk])
        return []
    want = change.desired
    if change.action == "issue":
        key = ApiKey(name=want["name"])
        secret = apikey_assign_secret(key)
    else:
        key = ApiKey.objects.get(prefix=change.prefix)
        secret = ""
    key.name = want["name"]
    key.rpm_limit, key.tpm_limit = want["rpm_limit"], want["tpm_limit"]
    key.is_staff_key = want["staff"]
    key.expires_at = want["expires_at"]
    owner: Any = None
    if want["owner"] is not None:
        owner = get_user_model().objects.get(username=want["owner"])
    key.owner = owner
    key.save()
    key.allowed_profiles.set([profiles[m] for m in want["models"]])
    return [Issued(key.name, secret)] if secret else []
