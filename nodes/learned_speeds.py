"""What routing has learned of a node's speed per model (gateway.routing keeps it in Redis,
written by every gateway process), for the admin and the console."""

from __future__ import annotations

import time
from dataclasses import dataclass

from clawdbot_site import redis_keys
from clawdbot_site.redis_client import sync_client


@dataclass(frozen=True, slots=True)
class LearnedSpeed:
    model: str
    decode_tps: float  # one sequence's decode tokens per second, running alone
    prefill_tps: float
    samples: float  # recent answers behind it (older ones fade)
    age_s: float  # since the last answer taught it anything

    def describe(self) -> str:
        return (
            f"{self.model}: decode {self.decode_tps:,.1f} tok/s, prefill "
            f"{self.prefill_tps:,.0f} tok/s ({self.samples:.0f} samples, {self.age_s:.0f} s ago)"
        )


def learned_speeds(node: str) -> list[LearnedSpeed]:
    client = sync_client()
    prefix = redis_keys.speed(node, "")
    keys = sorted(client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=500))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "d", "p", "n", "t")
    now_ms = time.time() * 1000
    out = []
    for key, (d, p, n, t) in zip(keys, pipe.execute(), strict=True):
        if d is None:
            continue
        model = key.decode(errors="replace")[len(prefix) :]
        age = max(0.0, (now_ms - float(t or now_ms)) / 1000)
        out.append(LearnedSpeed(model, float(d), float(p or 0), float(n or 0), age))
    return out
