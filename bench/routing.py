"""Routing on mixed GPUs (#14): Clawdbot against an ideal router and least-in-flight.

Three simulated vLLM nodes with A10, A100 and H100 speeds (factors 1.0, 2.2 and 3.8 of the
simulator's timing model), 8 sequences at once each, no prefix cache; non-streaming chat
requests with mixed prompt and output lengths (output fixed by max_tokens), Poisson arrivals
at 60 %, 80 % and 95 % of the cluster's capacity (every slot busy: routing_model.capacity_rps).
Each router gets a cluster of its own and the same arrivals at the same moments, all three at
once, so they meet the same machine noise:

* clawdbot: a real gateway (its own SQLite and Redis), the nodes onboarded with their GPU
  types, 8 slots each;
* ideal: in this process, straight to the nodes; it knows every node's true speed and the
  simulator's timing model, accounts exactly for what it has in flight on each node, and
  sends each request where it would finish first, waiting in that node's queue when needed;
* least-in-flight: in this process, straight to the nodes, blind to GPUs; the node with the
  fewest requests in flight, a central queue when every slot is taken.

Then one node (the H100) silently halves its speed mid-run, at 60 % of the load before it
(82 % after); the ideal router learns the new speed at that moment, as it knows true speeds.

`python -m bench.routing [--quick] [--seed N]`; `make bench` runs it after the hot path."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import cluster
from bench.routing_model import (
    ANSWER_TOKENS,
    DECODE_MS,
    PREFILL_MS,
    NodeModel,
    Request,
    capacity_rps,
    choose_least_finish,
    choose_least_in_flight,
    percentile,
    poisson_workload,
    recovered_after,
    window_p99,
)
from simulator.engine import MESSAGE_OVERHEAD_TOKENS, gpu_speed_factor
from simulator.state import Slots

GPUS = ("A10", "A100", "H100")
PARALLEL = 8
SLOWED_GPU = "H100"
SLOW_LOAD = 0.60
TIMEOUT_S = 300.0
FILLER = "the gateway routes each request to the node where it finishes first " * 200


@dataclass
class Outcome:
    at: float
    latency: float | None = None
    error: str | None = None


@dataclass
class Router:
    """Where a router sends requests; subclasses pick the node."""

    name: str
    nodes: list[cluster.SimNode]
    session: aiohttp.ClientSession
    outcomes: list[Outcome] = field(default_factory=list)

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        """POST and read the answer; None when it is a complete 200, else the error kind."""
        try:
            async with self.session.post(url, json=body, headers=headers) as response:
                data = await response.read()
                if response.status != 200:
                    return str(response.status)
                if b'"choices"' not in data:
                    return "bad_response"
                return None
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    async def send(self, request: Request, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def slowed(self, index: int, factor: float, now: float) -> None:
        """A node's true speed changed (only the ideal router is told)."""


@dataclass
class Clawdbot(Router):
    gateway: cluster.Gateway | None = None

    async def send(self, request: Request, body: dict[str, Any]) -> str | None:
        assert self.gateway is not None
        return await self.post(
            self.gateway.url + "/v1/chat/completions", body, self.gateway.headers
        )


@dataclass
class Ideal(Router):
    models: list[NodeModel] = field(default_factory=list)
    slots: list[Slots] = field(default_factory=list)

    async def send(self, request: Request, body: dict[str, Any]) -> str | None:
        now = time.monotonic()
        prompt = request.prompt_tokens
        index = choose_least_finish(self.models, prompt, request.max_tokens, now)
        self.models[index].add(request.index, prompt, request.max_tokens, now)
        # The model and the slots queue alike (FIFO, the same counts), so they stay in step.
        await self.slots[index].acquire()
        try:
            return await self.post(self.nodes[index].url + "/v1/chat/completions", body, {})
        finally:
            self.slots[index].release()
            self.models[index].complete(request.index, time.monotonic())

    def slowed(self, index: int, factor: float, now: float) -> None:
        self.models[index].set_factor(factor, now)


@dataclass
class LeastInFlight(Router):
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    in_flight: list[int] = field(default_factory=list)
    waiters: deque[asyncio.Future[int]] = field(default_factory=deque)

    async def acquire(self) -> int:
        if not self.waiters:
            index = choose_least_in_flight(self.in_flight, PARALLEL, self.rng)
            if index >= 0:
                self.in_flight[index] += 1
                return index
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return await future

    def release(self, index: int) -> None:
        self.in_flight[index] -= 1
        if self.waiters:
            chosen = choose_least_in_flight(self.in_flight, PARALLEL, self.rng)
            self.in_flight[chosen] += 1
            self.waiters.popleft().set_result(chosen)

    async def send(self, request: Request, body: dict[str, Any]) -> str | None:
        index = await self.acquire()
        try:
            return await self.post(self.nodes[index].url + "/v1/chat/completions", body, {})
        finally:
            self.release(index)


def request_body(request: Request) -> dict[str, Any]:
    # The simulator counts ceil(chars / 4) + 4 tokens for one message.
    chars = 4 * max(request.prompt_tokens - MESSAGE_OVERHEAD_TOKENS, 1)
    text = f"Request {request.index}. " + FILLER
    return {
        "model": cluster.MODEL,
        "messages": [{"role": "user", "content": text[:chars]}],
        "max_tokens": request.max_tokens,
        "stream": False,
    }


async def replay(
    routers: Sequence[Router],
    workload: Sequence[Request],
    *,
    slow_at: float | None = None,
    slowed_index: int = 0,
) -> float:
    """Send ``workload`` to every router at its moments; halve node ``slowed_index``'s speed
    in every cluster at ``slow_at``. Returns the start (monotonic seconds); outcomes land in
    each router's ``outcomes``, with ``at`` relative to the start."""
    start = time.monotonic() + 0.5
    bodies = [request_body(r) for r in workload]

    async def one(router: Router, request: Request, body: dict[str, Any]) -> None:
        await asyncio.sleep(max(start + request.at - time.monotonic(), 0.0))
        error = await router.send(request, body)
        # Latency from the moment the request was due, so a late start counts against it.
        latency = time.monotonic() - (start + request.at)
        router.outcomes.append(Outcome(request.at, None if error else latency, error))

    async def slow_down() -> None:
        assert slow_at is not None
        await asyncio.sleep(max(start + slow_at - time.monotonic(), 0.0))
        now = time.monotonic()
        async with aiohttp.ClientSession() as session:
            for router in routers:
                node = router.nodes[slowed_index]
                factor = gpu_speed_factor(node.gpu_type)
                async with session.post(
                    node.control_url + "/_sim/control", json={"speed": 0.5}
                ) as response:
                    response.raise_for_status()
                router.slowed(slowed_index, factor * 0.5, now)

    tasks = [one(router, r, b) for r, b in zip(workload, bodies, strict=True) for router in routers]
    if slow_at is not None:
        tasks.append(slow_down())
    await asyncio.gather(*tasks)
    return start


def summary_rows(routers: Sequence[Router], label: str) -> list[str]:
    ideal = next(r for r in routers if r.name == "ideal")
    ideal_p50 = percentile([o.latency for o in ideal.outcomes if o.latency is not None], 50)
    ideal_p99 = percentile([o.latency for o in ideal.outcomes if o.latency is not None], 99)
    lines = []
    for router in routers:
        ok = [o.latency for o in router.outcomes if o.latency is not None]
        errors = Counter(o.error for o in router.outcomes if o.error)
        p50, p99 = percentile(ok, 50), percentile(ok, 99)
        error_text = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0"
        lines.append(
            f"{label:<6} {router.name:<16} {len(router.outcomes):>5} {p50:>7.2f} {p99:>7.2f}"
            f" {p50 / ideal_p50:>6.2f}x {p99 / ideal_p99:>6.2f}x  {error_text}"
        )
        label = ""
    return lines


def make_routers(
    nodes_by_router: dict[str, list[cluster.SimNode]],
    gateway: cluster.Gateway,
    session: aiohttp.ClientSession,
    seed: int,
) -> list[Router]:
    ideal_nodes = nodes_by_router["ideal"]
    return [
        Clawdbot("clawdbot", nodes_by_router["clawdbot"], session, gateway=gateway),
        Ideal(
            "ideal",
            ideal_nodes,
            session,
            models=[NodeModel(gpu_speed_factor(n.gpu_type), PARALLEL) for n in ideal_nodes],
            slots=[Slots(PARALLEL, 1_000_000) for _ in ideal_nodes],
        ),
        LeastInFlight(
            "least-in-flight",
            nodes_by_router["least-in-flight"],
            session,
            rng=random.Random(seed),
            in_flight=[0] * len(GPUS),
        ),
    ]


async def measure(
    nodes_by_router: dict[str, list[cluster.SimNode]],
    gateway: cluster.Gateway,
    *,
    levels: Sequence[float],
    level_s: float,
    slow_s: float,
    slow_at: float,
    window_s: float,
    seed: int,
) -> None:
    factors = [gpu_speed_factor(g) for g in GPUS]
    capacity = capacity_rps(factors, PARALLEL)
    slowed_factors = [
        f * (0.5 if g == SLOWED_GPU else 1.0) for f, g in zip(factors, GPUS, strict=True)
    ]
    print(
        f"\nRouting on mixed GPUs (#14): {'/'.join(GPUS)} nodes (speed"
        f" {'/'.join(f'{f:g}' for f in factors)}), {PARALLEL} sequences each,"
        f" prefill {PREFILL_MS:g} ms and decode {DECODE_MS:g} ms per token on an A10;"
        f" capacity {capacity:.1f} req/s; {level_s:g} s per level, non-streaming; seed {seed};"
        f" gateway at {cluster.git_commit()};"
        f" {cluster.machine_load()}",
        flush=True,
    )
    print(f"{'load':<6} {'router':<16} {'reqs':>5} {'p50 s':>7} {'p99 s':>7} {'p50/id':>7}"
          f" {'p99/id':>7}  errors")  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        ratios: dict[float, float] = {}
        for number, load in enumerate(levels):
            routers = make_routers(nodes_by_router, gateway, session, seed)
            workload = poisson_workload(load * capacity, level_s, seed + number)
            await replay(routers, workload)
            for line in summary_rows(routers, f"{load:.0%}"):
                print(line, flush=True)
            p99 = {
                r.name: percentile([o.latency for o in r.outcomes if o.latency is not None], 99)
                for r in routers
            }
            ratios[load] = p99["clawdbot"] / p99["ideal"]

        routers = make_routers(nodes_by_router, gateway, session, seed)
        after = SLOW_LOAD * capacity / capacity_rps(slowed_factors, PARALLEL)
        workload = poisson_workload(SLOW_LOAD * capacity, slow_s, seed + 100)
        await replay(routers, workload, slow_at=slow_at, slowed_index=GPUS.index(SLOWED_GPU))
    count = math.ceil((slow_s - slow_at) / window_s)
    before = max(math.floor(slow_at / window_s), 1)
    begin = slow_at - before * window_s
    windows = {
        r.name: window_p99(
            ((o.at, o.latency) for o in r.outcomes if o.latency is not None),
            begin,
            window_s,
            before + count,
        )
        for r in routers
    }
    print(
        f"\nThe {SLOWED_GPU} halves its speed {slow_at:g} s into a run at {SLOW_LOAD:.0%} of"
        f" capacity ({after:.0%} of what is left after); p99 s of the requests sent in each"
        f" {window_s:g}-s window, by start relative to the change:"
    )
    print(f"{'router':<16} " + " ".join(
        f"{(begin + i * window_s - slow_at):>+6.0f}s" for i in range(before + count)
    ))  # fmt: skip
    for router in routers:
        errors = sum(1 for o in router.outcomes if o.error)
        cells = " ".join(f"{v:>7.2f}" for v in windows[router.name])
        print(f"{router.name:<16} {cells}   errors {errors}")
    ratio_cells = [c / i for c, i in zip(windows["clawdbot"], windows["ideal"], strict=True)]
    print(f"{'clawdbot/ideal':<16} " + " ".join(f"{r:>6.2f}x" for r in ratio_cells))
    recovered = recovered_after(ratio_cells[before:], window_s, 1.2)
    recovery = (
        f"within 1.2x the ideal from {recovered:g} s after the change on"
        if recovered is not None
        else "not back within 1.2x the ideal by the end of the run"
    )
    print(f"clawdbot p99: {recovery} (target: within 30 s)")
    print(
        "targets: p99 <= 1.1x ideal at 80 % (now "
        + (f"{ratios[0.8]:.2f}x" if 0.8 in ratios else "n/a")
        + "), <= 1.25x at 95 % (now "
        + (f"{ratios[0.95]:.2f}x" if 0.95 in ratios else "n/a")
        + "), 0 errors",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1 min)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if args.quick:
        level_s, slow_s, slow_at, window_s = 8.0, 24.0, 8.0, 4.0
    else:
        level_s, slow_s, slow_at, window_s = 40.0, 60.0, 20.0, 10.0
    sim_args = [
        "--parallel", str(PARALLEL), "--max-queue", "256", "--prefill-ms", str(PREFILL_MS),
        "--decode-ms", str(DECODE_MS), "--answer-tokens", str(ANSWER_TOKENS),
        "--prefix-cache-tokens", "0",
    ]  # fmt: skip
    with cluster.processes() as procs:
        nodes_by_router = {
            name: cluster.start_nodes(procs, GPUS, prefix=name, sim_args=sim_args)
            for name in ("clawdbot", "ideal", "least-in-flight")
        }
        gateway = cluster.start_gateway(
            procs, nodes_by_router["clawdbot"], parallel=PARALLEL, queue_size=256
        )
        asyncio.run(
            measure(
                nodes_by_router,
                gateway,
                levels=(0.6, 0.8, 0.95),
                level_s=level_s,
                slow_s=slow_s,
                slow_at=slow_at,
                window_s=window_s,
                seed=args.seed,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
