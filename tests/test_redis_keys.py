"""The key map is the only place key names are spelled: the Lua scripts (admission, the
degradation tick, the response cache) build theirs from parts the map lists, and no module
spells a key of its own."""

from __future__ import annotations

import re
from pathlib import Path

from clawdbot_site import redis_keys
from gateway import admission, degradation, response_cache

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (
    admission.ADMIT,
    admission.RELEASE,
    admission.RENEW,
    admission.FORGET,
    degradation.TICK,
    degradation.CHANGE,
    response_cache.STORE,
)


def test_every_key_part_the_scripts_build_is_in_the_map() -> None:
    built = set()
    for script in SCRIPTS:
        # `p .. 'slots:' .. node`, `p .. 'rl:' .. kind`, `p .. 'm:requests'`
        built |= set(re.findall(r"p \.\. '([^']*)'", script))
    unknown = {name for name in built if not name.startswith(tuple(redis_keys.LUA_PARTS))}
    assert unknown == set()
    unused = {part for part in redis_keys.LUA_PARTS if not any(n.startswith(part) for n in built)}
    assert unused == set()


def test_no_module_spells_a_key_outside_the_map() -> None:
    spelled = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in (".venv", "tests", "simulator", "var"):
            continue
        if path.name == "redis_keys.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']clawdbot:[a-z]""", line):
                spelled.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert spelled == []
