"""The config file's shape, and checking a file against it before anything is applied. Every
problem is reported at once, each named by its path in the file (`nodes[1].gpu_type`).

A document, as `clawdbot config export` writes it and `apply` reads it::

    version: 1
    profiles:
      - model_id: qwen3-32b
        upstream_model: qwen3:32b
        context_window: 8192
        max_output_tokens: 2048
        fallback: qwen2-7b          # a profile of this file (or null)
        degraded_mode: static       # at tier 3: static (degraded_answer, or 503) | unavailable
        degraded_answer: "We are very busy; please try again in a minute."
    nodes:
      - name: gpu1
        base_url: http://gpu1:11434
        server_kind: ollama         # vllm, sglang, llamacpp, tgi, openai (any other); api_kind
        api_kind: ollama            # follows from it (ollama or openai), or names it alone
        gpu_type: A100
        deployments:
          - profile: qwen3-32b
            weight_override: null
    keys:
      - name: support-bot
        prefix: ck-ab12cd34         # an existing key; leave it out to have one issued
        models: [qwen3-32b]         # [] = every model
        rpm_limit: 60

Fields left out take their defaults (as for a new object), so the file says everything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import yaml

from nodes.server_kinds import resolve

VERSION = 1

# Field → (JSON types allowed, default). None in the types means null is allowed.
NODE_FIELDS: dict[str, tuple[tuple[type | None, ...], Any]] = {
    "base_url": ((str,), None),
    "api_kind": ((str, None), None),
    "server_kind": ((str, None), None),
    "gpu_type": ((str,), None),
    "gpu_count": ((int,), 1),
    "vram_gb_per_gpu": ((int, float), 0.0),
    "max_concurrent": ((int,), 4),
    "queue_size": ((int,), 16),
    "enabled": ((bool,), True),
    "draining": ((bool,), False),
    "restart_command": ((str,), ""),
    "labels": ((dict,), {}),
}
PROFILE_FIELDS: dict[str, tuple[tuple[type | None, ...], Any]] = {
    "upstream_model": ((str,), None),
    "display_name": ((str,), ""),
    "context_window": ((int,), None),
    "max_output_tokens": ((int,), None),
    "fallback": ((str, None), None),
    "degraded_mode": ((str,), "static"),
    "degraded_answer": ((str,), ""),
    "min_vram_gb": ((int, float), 0.0),
    "prefetch": ((bool,), False),
    "warmup_prompt": ((str,), ""),
    "keep_alive": ((str,), "5m"),
    "enabled": ((bool,), True),
}
DEPLOYMENT_FIELDS: dict[str, tuple[tuple[type | None, ...], Any]] = {
    "weight_override": ((int, float, None), None),
}
KEY_FIELDS: dict[str, tuple[tuple[type | None, ...], Any]] = {
    "prefix": ((str, None), None),
    "owner": ((str, None), None),
    "models": ((list,), []),
    "rpm_limit": ((int, None), None),
    "tpm_limit": ((int, None), None),
    "staff": ((bool,), False),
    "expires_at": ((str, datetime, date, None), None),
    "revoked": ((bool,), False),
}


class ConfigError(Exception):
    """The file cannot be applied; `problems` are "path: what is wrong" lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Desired:
    """A checked document: entries keyed by name, every field present."""

    profiles: dict[str, dict[str, Any]]
    nodes: dict[str, dict[str, Any]]
    deployments: dict[tuple[str, str], dict[str, Any]]  # (node, profile) → fields
    keys: list[dict[str, Any]]  # with "name" and "at" (its path)


def parse(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"the file is not valid YAML: {where}{problem}"]) from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime | date):
        return "a date"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "a list" if isinstance(value, list) else "a mapping"
    )


def _allowed(types: tuple[type | None, ...]) -> str:
    names: dict[type | None, str] = {
        None: "null",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
        datetime: "a date and time",
        date: "a date",
    }
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _fits(value: Any, types: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):
        return bool in types
    return any(t is not None and t is not bool and isinstance(value, t) for t in types)


def _fields(
    entry: Any,
    at: str,
    spec: dict[str, tuple[tuple[type | None, ...], Any]],
    identity: str,
    problems: list[str],
    extra: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        problems.append(f"{at}: expected a mapping, got {_type_name(entry)}")
        return None
    name = entry.get(identity)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{at}.{identity}: required, a non-empty string")
        return None
    out: dict[str, Any] = {identity: name}
    for field in entry:
        if field != identity and field not in spec and field not in extra:
            known = ", ".join([identity, *spec, *extra])
            problems.append(f"{at}.{field}: unknown field (known: {known})")
    for field, (types, default) in spec.items():
        if field not in entry:
            if default is None and None not in types:
                problems.append(f"{at}.{field}: required")
            out[field] = default
            continue
        value = entry[field]
        if not _fits(value, types):
            problems.append(f"{at}.{field}: expected {_allowed(types)}, got {_type_name(value)}")
        out[field] = (
            float(value)
            if float in types and isinstance(value, int) and not isinstance(value, bool)
            else value
        )
    return out


def _kinds(fields: dict[str, Any], at: str, problems: list[str]) -> None:
    """Fill in whichever of api_kind and server_kind the entry left out (a file written before
    server kinds has api_kind only), or report the pair that disagrees."""
    api_kind, server_kind = fields["api_kind"], fields["server_kind"]
    if not isinstance(api_kind, str | None) or not isinstance(server_kind, str | None):
        return  # the type error is reported already
    try:
        fields["api_kind"], fields["server_kind"] = resolve(api_kind, server_kind)
    except ValueError as exc:
        problems.append(f"{at}.{'server_kind' if server_kind else 'api_kind'}: {exc}")


def _list(doc: dict[str, Any], section: str, problems: list[str]) -> list[Any]:
    value = doc.get(section, [])
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{section}: expected a list, got {_type_name(value)}")
        return []
    return value


def check(doc: Any) -> Desired:
    """The document, checked for shape, types, duplicates and references; ConfigError with
    every problem otherwise. Field values (a URL, a GPU type) are the models' to check."""
    desired, problems = survey(doc)
    if problems:
        raise ConfigError(problems)
    return desired


def survey(doc: Any) -> tuple[Desired, list[str]]:
    """`check`'s findings without raising: what could be read, and the problems, so that
    the models' own checks can run on the rest and every problem is reported at once."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError([f"the file must be a mapping with version: {VERSION}"])
    if doc.get("version") != VERSION:
        problems.append(f"version: expected {VERSION}, got {doc.get('version')!r}")
    for section in doc:
        if section not in ("version", "profiles", "nodes", "keys"):
            problems.append(f"{section}: unknown section (known: version, profiles, nodes, keys)")
    desired = Desired(profiles={}, nodes={}, deployments={}, keys=[])
    for i, entry in enumerate(_list(doc, "profiles", problems)):
        at = f"profiles[{i}]"
        fields = _fields(entry, at, PROFILE_FIELDS, "model_id", problems)
        if fields is None:
            continue
        if fields["model_id"] in desired.profiles:
            problems.append(f"{at}.model_id: {fields['model_id']!r} is listed twice")
        desired.profiles[fields["model_id"]] = {**fields, "at": at}
    for i, entry in enumerate(_list(doc, "nodes", problems)):
        at = f"nodes[{i}]"
        fields = _fields(entry, at, NODE_FIELDS, "name", problems, extra=("deployments",))
        if fields is None:
            continue
        _kinds(fields, at, problems)
        name = fields["name"]
        if name in desired.nodes:
            problems.append(f"{at}.name: {name!r} is listed twice")
        desired.nodes[name] = {**fields, "at": at}
        deployments = entry.get("deployments") or []
        if not isinstance(deployments, list):
            problems.append(f"{at}.deployments: expected a list, got {_type_name(deployments)}")
            continue
        for j, deployment in enumerate(deployments):
            where = f"{at}.deployments[{j}]"
            if isinstance(deployment, str):  # the short form: a profile's model_id
                deployment = {"profile": deployment}
            dep = _fields(deployment, where, DEPLOYMENT_FIELDS, "profile", problems)
            if dep is None:
                continue
            if dep["profile"] not in desired.profiles:
                problems.append(f"{where}.profile: {dep['profile']!r} is not a profile here")
            if (name, dep["profile"]) in desired.deployments:
                problems.append(f"{where}.profile: {dep['profile']!r} is deployed twice")
            desired.deployments[(name, dep["profile"])] = {**dep, "at": where}
    for profile in desired.profiles.values():
        fallback = profile["fallback"]
        if fallback is not None and fallback not in desired.profiles:
            problems.append(f"{profile['at']}.fallback: {fallback!r} is not a profile here")
    problems += _fallback_loops(desired.profiles)
    unprefixed: set[str] = set()
    for i, entry in enumerate(_list(doc, "keys", problems)):
        at = f"keys[{i}]"
        fields = _fields(entry, at, KEY_FIELDS, "name", problems)
        if fields is None:
            continue
        prefix = fields["prefix"]
        if isinstance(prefix, str):
            prefix = fields["prefix"] = prefix.removeprefix("ck-")
            if "-" in prefix:
                problems.append(f"{at}.prefix: give the prefix only (ck-ab12cd34), never a key")
        models = fields["models"]
        if isinstance(models, list):
            for j, model in enumerate(models):
                if not isinstance(model, str) or model not in desired.profiles:
                    problems.append(f"{at}.models[{j}]: {model!r} is not a profile here")
            fields["models"] = sorted({m for m in models if isinstance(m, str)})
        expires = fields["expires_at"]
        if isinstance(expires, str):
            try:
                expires = fields["expires_at"] = datetime.fromisoformat(expires)
            except ValueError:
                problems.append(f"{at}.expires_at: not an ISO 8601 date and time: {expires!r}")
        if isinstance(expires, date) and not isinstance(expires, datetime):
            expires = datetime(expires.year, expires.month, expires.day)  # midnight
        if isinstance(expires, datetime) and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)  # a time without a zone is UTC
        if isinstance(expires, datetime):
            fields["expires_at"] = expires
        if fields["prefix"] is None:
            if fields["name"] in unprefixed:
                problems.append(
                    f"{at}.name: {fields['name']!r} is listed twice without a prefix: each "
                    "would be a key of its own, issued on every apply"
                )
            unprefixed.add(fields["name"])
        for limit in ("rpm_limit", "tpm_limit"):
            if isinstance(fields[limit], int) and fields[limit] < 1:
                problems.append(f"{at}.{limit}: must be at least 1, or null for no limit")
        desired.keys.append({**fields, "at": at})
    return desired, problems


def _fallback_loops(profiles: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for model_id, profile in profiles.items():
        chain, current = [model_id], profile["fallback"]
        while current is not None and current in profiles:
            chain.append(current)
            if current == model_id:
                problems.append(f"{profile['at']}.fallback: makes a loop: {' → '.join(chain)}")
                break
            if len(chain) > len(profiles) + 1:
                break  # a loop that does not come back here: reported at its own members
            current = profiles[current]["fallback"]
    return problems


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
