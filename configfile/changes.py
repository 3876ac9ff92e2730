"""What applying a file would change: the desired configuration against the current one,
both checked documents (`document.Desired`). Pure: no database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from configfile.document import (
    DEPLOYMENT_FIELDS,
    KEY_FIELDS,
    NODE_FIELDS,
    PROFILE_FIELDS,
    ConfigError,
    Desired,
)

KEY_COMPARED = tuple(f for f in KEY_FIELDS if f not in ("prefix", "revoked"))


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | issue | revoke
    kind: str  # profile | node | deployment | key
    name: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field → (old, new)
    desired: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""  # a key's, when it has one

    def line(self) -> str:
        mark = {"create": "+", "issue": "+", "update": "~", "delete": "-", "revoke": "-"}
        what = f"{mark[self.action]} {self.kind} {self.name}"
        if self.prefix:
            what += f" (ck-{self.prefix})"
        if self.action == "issue":
            return what + ": a new key, its secret shown once"
        if self.action == "revoke":
            return what + ": revoked"
        if self.fields:
            return (
                what
                + ": "
                + ", ".join(
                    f"{name} {_shown(old)} → {_shown(new)}"
                    for name, (old, new) in self.fields.items()
                )
            )
        return what


def _shown(value: Any) -> str:
    return repr(value.isoformat()) if isinstance(value, datetime) else repr(value)


def _differences(
    current: dict[str, Any], desired: dict[str, Any], names: tuple[str, ...]
) -> dict[str, tuple[Any, Any]]:
    return {n: (current[n], desired[n]) for n in names if current[n] != desired[n]}


def plan(
    current: Desired, desired: Desired, *, prune: bool, revoked: frozenset[str] = frozenset()
) -> list[Change]:
    """The changes, in the order they can be applied; ConfigError when the file names a
    key it cannot match. `revoked`: the prefixes of revoked keys (not in `current`)."""
    changes: list[Change] = []
    for model_id, want in desired.profiles.items():
        have = current.profiles.get(model_id)
        if have is None:
            changes.append(Change("create", "profile", model_id, desired=want))
        elif diff := _differences(have, want, tuple(PROFILE_FIELDS)):
            changes.append(Change("update", "profile", model_id, diff, want))
    for name, want in desired.nodes.items():
        have = current.nodes.get(name)
        if have is None:
            changes.append(Change("create", "node", name, desired=want))
        elif diff := _differences(have, want, tuple(NODE_FIELDS)):
            changes.append(Change("update", "node", name, diff, want))
    for (node, profile), want in desired.deployments.items():
        have = current.deployments.get((node, profile))
        label = f"{node} ← {profile}"
        if have is None:
            changes.append(Change("create", "deployment", label, desired={**want, "node": node}))
        elif diff := _differences(have, want, tuple(DEPLOYMENT_FIELDS)):
            changes.append(Change("update", "deployment", label, diff, {**want, "node": node}))
    changes += _key_changes(current, desired, prune=prune, revoked=revoked)
    if prune:
        for node, profile in current.deployments.keys() - desired.deployments.keys():
            changes.append(Change("delete", "deployment", f"{node} ← {profile}"))
        for name in current.nodes.keys() - desired.nodes.keys():
            changes.append(Change("delete", "node", name))
        for model_id in current.profiles.keys() - desired.profiles.keys():
            changes.append(Change("delete", "profile", model_id))
    return changes


def _key_changes(
    current: Desired, desired: Desired, *, prune: bool, revoked: frozenset[str]
) -> list[Change]:
    """Keys are matched by prefix, or, without one, by name among live keys (so a key the
    file had issued is found again by its name: applying twice issues it once)."""
    problems: list[str] = []
    by_prefix = {k["prefix"]: k for k in current.keys}
    matched: set[str] = set()
    changes: list[Change] = []
    for want in desired.keys:
        have: dict[str, Any] | None = None
        if want["prefix"] is not None:
            have = by_prefix.get(want["prefix"])
            if have is None and want["prefix"] in revoked:
                if not want["revoked"]:
                    problems.append(
                        f"{want['at']}.prefix: key ck-{want['prefix']} is revoked, and a revoked "
                        "key cannot be restored (leave its prefix out to have a new one issued)"
                    )
                continue  # revoked already, as the file says
            if have is None:
                problems.append(f"{want['at']}.prefix: no live key ck-{want['prefix']}")
                continue
        else:
            named = [k for k in current.keys if k["name"] == want["name"]]
            if len(named) > 1:
                prefixes = ", ".join("ck-" + k["prefix"] for k in named)
                problems.append(
                    f"{want['at']}.name: {len(named)} live keys are named {want['name']!r} "
                    f"({prefixes}): give the prefix of the one meant"
                )
                continue
            have = named[0] if named else None
        if have is None:
            if not want["revoked"]:
                changes.append(Change("issue", "key", want["name"], desired=want))
            continue
        if have["prefix"] in matched:
            problems.append(f"{want['at']}: names the same key as another entry")
            continue
        matched.add(have["prefix"])
        if want["revoked"]:
            changes.append(Change("revoke", "key", want["name"], prefix=have["prefix"]))
        elif diff := _differences(have, want, ("name", *KEY_COMPARED)):
            changes.append(Change("update", "key", want["name"], diff, want, have["prefix"]))
    if problems:
        raise ConfigError(problems)
    if prune:
        for have in current.keys:
            if have["prefix"] not in matched:
                changes.append(Change("revoke", "key", have["name"], prefix=have["prefix"]))
    return changes
