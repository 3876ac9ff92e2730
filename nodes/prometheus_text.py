"""Reading Prometheus' text exposition format (what vLLM, SGLang, llama.cpp and TGI serve on
/metrics). Pure and tolerant: a line that cannot be read is skipped, never an error, since
one odd series (a new label, an OpenMetrics extension) must not cost the gauges beside it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _labels(text: str, start: int) -> tuple[dict[str, str], int] | None:
    """The labels of `{a="x",b="y"}` beginning at text[start] == "{", and the index after "}"."""
    labels: dict[str, str] = {}
    i = start + 1
    n = len(text)
    while True:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        eq = text.find("=", i)
        if eq < 0:
            return None
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        if not key or i >= n or text[i] != '"':
            return None
        i += 1
        value = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                value.append(_ESCAPES.get(text[i + 1], text[i + 1]))
                i += 2
                continue
            value.append(text[i])
            i += 1
        if i >= n:
            return None  # the value's closing quote is missing
        labels[key] = "".join(value)
        i += 1


def parse_line(line: str) -> Sample | None:
    """One sample line (`name{labels} value [timestamp]`), or None for a comment, a blank or
    a line that cannot be read."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    brace = line.find("{")
    space = line.find(" ")
    if brace >= 0 and (space < 0 or brace < space):
        name = line[:brace]
        parsed = _labels(line, brace)
        if parsed is None:
            return None
        labels, end = parsed
        rest = line[end:].split()
    else:
        name, *rest = line.split()
        labels = {}
    if not name or not rest:
        return None
    try:
        value = float(rest[0])  # also reads NaN, +Inf, -Inf and 1e-3
    except ValueError:
        return None
    return Sample(name=name, value=value, labels=labels)


def parse(text: str, names: Iterable[str] | None = None) -> list[Sample]:
    """The samples of an exposition. With `names`, only those metrics are read: a vLLM's
    /metrics holds thousands of histogram lines a scraper has no use for."""
    wanted = tuple(names) if names is not None else None
    samples = []
    for line in text.splitlines():
        if wanted is not None and not line.startswith(wanted):
            continue
        sample = parse_line(line)
        if sample is None or (wanted is not None and sample.name not in wanted):
            continue
        samples.append(sample)
    return samples


def finite(samples: Iterable[Sample], name: str) -> list[float]:
    """The finite values of one metric's series (NaN and ±Inf say nothing of a load)."""
    return [s.value for s in samples if s.name == name and math.isfinite(s.value)]
