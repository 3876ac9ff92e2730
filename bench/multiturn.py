"""Conversation affinity (#16): multi-turn chats on a heterogeneous cluster with prefix caches.

Simulated users (a fixed number, each starting a new conversation when one ends) hold
conversations that share one system prompt: a long first message (about 4,000 tokens), then
four follow-ups after a few seconds of thought each (exponential, mean 4 s), every turn
resending the history with the answers as the simulator gave them (streaming, with usage).
Three configurations run at once, each on its own cluster of three simulated vLLM nodes
(A10, A100 and H100 speeds, 8 sequences each, a prefix cache of --cache-tokens per node) and
with the same users, texts and pauses:

* clawdbot, affinity on: a real gateway started with CLAWDBOT_AFFINITY=1;
* clawdbot, affinity off: another, started with CLAWDBOT_AFFINITY=0;
* sticky: in this process, each conversation pinned for its whole life to the node chosen at
  its first turn (the fewest live conversations for the node's speed), straight to the node.

Printed for each: time to first token of follow-up turns (p50, p99) and of first turns
(p50), end-to-end p99 over all turns, errors, turns completed per second, and the prefix
caches' hit ratio (prompt tokens served from cache over prompt tokens, from the simulators'
counters) and the share of follow-up turns that found less than half their prompt cached
(from each answer's usage); for the gateways also what their X-Clawdbot-Affinity header said.

`python -m bench.multiturn [--quick] [--seed N]`; `make bench` runs it after bench.routing."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import cluster
from bench.conversations import (
    FOLLOW_UPS,
    SYSTEM_PROMPT,
    THINK_MEAN_S,
    Conversation,
    conversations,
    hit_ratio,
    start_offsets,
    sticky_node,
)
from bench.routing_model import DECODE_MS, PREFILL_MS, percentile
from simulator.engine import gpu_speed_factor

GPUS = ("A10", "A100", "H100")
PARALLEL = 8
TIMEOUT_S = 300.0
AFFINITY_HEADER = "X-Clawdbot-Affinity"


@dataclass
class TurnOutcome:
    turn: int
    ttft: float | None = None
    latency: float | None = None
    error: str | None = None
    # From the answer's usage: the prompt's tokens and those the node's cache served.
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def missed(self) -> bool:
        """The node held less than half the prompt: the turn paid most of its history again."""
        return self.cached_tokens < self.prompt_tokens / 2


@dataclass
class Config:
    """One configuration under test: where its turns go and what came back."""

    name: str
    nodes: list[cluster.SimNode]
    session: aiohttp.ClientSession
    gateway: cluster.Gateway | None = None
    outcomes: list[TurnOutcome] = field(default_factory=list)
    affinity: Counter[str] = field(default_factory=Counter)
    caches: list[dict[str, int]] = field(default_factory=list)
    live: list[int] = field(default_factory=list)
    placed: dict[str, int] = field(default_factory=dict)

    def begin(self, conversation: Conversation) -> None:
        if self.gateway is None:
            factors = [gpu_speed_factor(n.gpu_type) for n in self.nodes]
            node = sticky_node(self.live, factors)
            self.live[node] += 1
            self.placed[conversation.key] = node

    def end(self, conversation: Conversation) -> None:
        node = self.placed.pop(conversation.key, None)
        if node is not None:
            self.live[node] -= 1

    def target(self, conversation: Conversation) -> tuple[str, dict[str, str]]:
        if self.gateway is not None:
            return self.gateway.url + "/v1/chat/completions", self.gateway.headers
        return self.nodes[self.placed[conversation.key]].url + "/v1/chat/completions", {}

    async def turn(
        self, conversation: Conversation, messages: list[dict[str, str]], max_tokens: int
    ) -> tuple[TurnOutcome, str]:
        """Stream one turn; the outcome (turn number filled in by the caller) and the answer."""
        url, headers = self.target(conversation)
        body = {
            "model": cluster.MODEL,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.monotonic()
        ttft: float | None = None
        parts: list[str] = []
        usage: dict[str, Any] = {}
        done = False
        try:
            async with self.session.post(url, json=body, headers=headers) as response:
                if response.status != 200:
                    await response.read()
                    return TurnOutcome(0, error=str(response.status)), ""
                label = response.headers.get(AFFINITY_HEADER)
                if label is not None:
                    self.affinity[label] += 1
                buffer = b""
                async for data in response.content.iter_any():
                    buffer += data
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        payload = event.removeprefix(b"data: ").strip()
                        if payload == b"[DONE]":
                            done = True
                            continue
                        if not payload or payload.startswith(b":"):
                            continue
                        chunk = orjson.loads(payload)
                        if "error" in chunk:
                            return TurnOutcome(0, error="stream_error"), ""
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or ():
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                if ttft is None:
                                    ttft = time.monotonic() - started
                                parts.append(text)
        except TimeoutError:
            return TurnOutcome(0, error="timeout"), ""
        except aiohttp.ClientError as exc:
            return TurnOutcome(0, error=type(exc).__name__), ""
        if not done or ttft is None:
            return TurnOutcome(0, error="stream_error"), ""
        details = usage.get("prompt_tokens_details") or {}
        outcome = TurnOutcome(
            0,
            ttft,
            time.monotonic() - started,
            prompt_tokens=usage.get("prompt_tokens", 0),
            cached_tokens=details.get("cached_tokens", 0),
        )
        return outcome, "".join(parts)


async def user(config: Config, number: int, start: float, deadline: float, seed: int) -> None:
    await asyncio.sleep(max(start - time.monotonic(), 0.0))
    for conversation in conversations(number, seed):
        if time.monotonic() >= deadline:
            return
        config.begin(conversation)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        try:
            for index, turn in enumerate(conversation.turns):
                if index:
                    await asyncio.sleep(turn.think_s)
                    if time.monotonic() >= deadline:
                        return
                messages.append({"role": "user", "content": turn.content})
                outcome, answer = await config.turn(conversation, messages, turn.max_tokens)
                outcome.turn = index
                config.outcomes.append(outcome)
                if outcome.error:
                    break  # a user whose turn failed starts over
                messages.append({"role": "assistant", "content": answer})
        finally:
            config.end(conversation)


def cache_counters(nodes: Sequence[cluster.SimNode]) -> list[dict[str, int]]:
    return [node.stats()["prefix_cache"] for node in nodes]


async def run_all(
    configs: Sequence[Config], *, users: int, duration_s: float, ramp_s: float, seed: int
) -> dict[str, tuple[float, float]]:
    """Every configuration at once; returns each one's (token, request) cache hit ratio."""
    before = {c.name: await asyncio.to_thread(cache_counters, c.nodes) for c in configs}
    start = time.monotonic() + 0.5
    deadline = start + duration_s
    offsets = start_offsets(users, ramp_s, seed)
    await asyncio.gather(
        *(
            user(config, number, start + offsets[number], deadline, seed)
            for config in configs
            for number in range(users)
        )
    )
    ratios = {}
    for config in configs:
        after = await asyncio.to_thread(cache_counters, config.nodes)
        ratios[config.name] = hit_ratio(before[config.name], after)
        config.caches = [
            {**a, "queries": a["queries"] - b["queries"]}
            for a, b in zip(after, before[config.name], strict=True)
        ]
    return ratios


def report(
    configs: Sequence[Config], ratios: dict[str, tuple[float, float]], duration_s: float
) -> None:
    print(
        f"{'config':<22} {'turns':>5} {'errors':>6} {'fu ttft p50':>11} {'p99':>6}"
        f" {'1st ttft p50':>12} {'e2e p99':>8} {'turns/s':>7} {'hit tok':>7} {'hit req':>7}"
        f" {'fu miss':>7}"
    )
    rows: dict[str, tuple[float, float, float]] = {}
    for config in configs:
        ok = [o for o in config.outcomes if o.error is None]
        follow = [o.ttft for o in ok if o.turn > 0 and o.ttft is not None]
        follow_missed = sum(1 for o in ok if o.turn > 0 and o.missed)
        first = [o.ttft for o in ok if o.turn == 0 and o.ttft is not None]
        latencies = [o.latency for o in ok if o.latency is not None]
        errors = Counter(o.error for o in config.outcomes if o.error)
        token_ratio, request_ratio = ratios[config.name]
        fu50, fu99 = percentile(follow, 50), percentile(follow, 99)
        rows[config.name] = (fu50, fu99, token_ratio)
        print(
            f"{config.name:<22} {len(ok):>5} {sum(errors.values()):>6} {fu50:>11.3f}"
            f" {fu99:>6.2f} {percentile(first, 50):>12.2f} {percentile(latencies, 99):>8.2f}"
            f" {len(ok) / duration_s:>7.2f} {token_ratio:>7.3f} {request_ratio:>7.3f}"
            f" {follow_missed / max(len(follow), 1):>7.3f}"
        )
        if errors:
            print(f"  errors: {', '.join(f'{k}: {v}' for k, v in sorted(errors.items()))}")
        if config.affinity:
            labels = ", ".join(f"{k}: {v}" for k, v in config.affinity.most_common())
            print(f"  {AFFINITY_HEADER}: {labels}")
        placement = ", ".join(
            f"{node.gpu_type} {cache['queries']} turns, cache {cache['used_tokens'] // 1000}k"
            f"/{cache['capacity_tokens'] // 1000}k"
            for node, cache in zip(config.nodes, config.caches, strict=True)
        )
        print(f"  per node: {placement}")
    sticky = rows["sticky"]
    for name in ("clawdbot affinity on", "clawdbot affinity off"):
        fu50, fu99, token_ratio = rows[name]
        print(
            f"{name} vs sticky: follow-up TTFT p50 {fu50 / sticky[0]:.2f}x (target <= 1.2x),"
            f" p99 {fu99 / sticky[1]:.2f}x (target <= 1x), hit ratio"
            f" {token_ratio - sticky[2]:+.3f} (target within 0.05)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.multiturn", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--cache-tokens", type=int, default=131072, help="each node's prefix cache, in tokens"
    )
    parser.add_argument("--users", type=int, default=None, help="simulated users (default 30)")
    args = parser.parse_args(argv)
    users, duration_s, ramp_s = (24, 30.0, 5.0) if args.quick else (30, 80.0, 10.0)
    users = args.users or users
    sim_args = [
        "--parallel", str(PARALLEL), "--max-queue", "256", "--prefill-ms", str(PREFILL_MS),
        "--decode-ms", str(DECODE_MS), "--answer-tokens", "4096",
        "--prefix-cache-tokens", str(args.cache_tokens),
    ]  # fmt: skip
    names = ("clawdbot affinity on", "clawdbot affinity off", "sticky")
    with cluster.processes() as procs:
        nodes = {
            name: cluster.start_nodes(procs, GPUS, prefix=f"c{i}", sim_args=sim_args)
            for i, name in enumerate(names)
        }
        gateways = {
            name: cluster.start_gateway(
                procs,
                nodes[name],
                parallel=PARALLEL,
                queue_size=256,
                env={"CLAWDBOT_AFFINITY": "1" if name.endswith(" on") else "0"},
            )
            for name in names[:2]
        }
        print(
            f"\nConversation affinity (#16): {users} users, each holding conversations of one"
            f" shared system prompt, a ~4,000-token first message and {FOLLOW_UPS} follow-ups"
            f" (think time mean {THINK_MEAN_S:g} s), streaming, for {duration_s:g} s;"
            f" {'/'.join(GPUS)} nodes, {PARALLEL} sequences and a {args.cache_tokens}-token"
            f" prefix cache each; seed {args.seed}; gateway at {cluster.git_commit()};"
            f" {cluster.machine_load()}",
            flush=True,
        )

        async def measure() -> None:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                configs = [
                    Config(
                        name,
                        nodes[name],
                        session,
                        gateway=gateways.get(name),
                        live=[0] * len(GPUS),
                    )
                    for name in names
                ]
                ratios = await run_all(
                    configs, users=users, duration_s=duration_s, ramp_s=ramp_s, seed=args.seed
                )
                report(configs, ratios, duration_s)

        asyncio.run(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
