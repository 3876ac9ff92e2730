"""Pure pieces of the routing benchmarks: the workload, the cluster's capacity, the ideal
router's model of each node, and the summaries printed. No I/O and no clock: times are
passed in, so each piece is unit-tested directly (tests/bench/test_routing_model.py).

The ideal router's node model is the simulator's own timing model (simulator/engine.py),
run forward as a fluid: each admitted request first pays its prefill, then decodes its
tokens at ``decode_seconds(running)`` each, where ``running`` is every request holding one of
the node's ``parallel`` slots; requests past the slots wait in FIFO order. The router keeps
it exact by removing a request when its answer actually arrives."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from simulator.engine import decode_seconds, prefill_seconds

PREFILL_MS = 0.5
DECODE_MS = 30.0
# Answers long enough that max_tokens decides every length.
ANSWER_TOKENS = 4096
# Mixed output lengths: mostly short answers, a few long ones.
OUTPUT_CHOICES = (16, 32, 64, 128, 256)
OUTPUT_WEIGHTS = (0.3, 0.3, 0.2, 0.15, 0.05)
PROMPT_RANGE = (64, 1024)
_DONE = 1e-9


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the open-loop workload: when it is sent and its size in tokens."""

    index: int
    at: float
    prompt_tokens: int
    max_tokens: int


def mean_output_tokens() -> float:
    return sum(c * w for c, w in zip(OUTPUT_CHOICES, OUTPUT_WEIGHTS, strict=True))


def mean_prompt_tokens() -> float:
    return sum(PROMPT_RANGE) / 2


def poisson_workload(rate: float, duration_s: float, seed: int) -> list[Request]:
    """Poisson arrivals at ``rate`` per second for ``duration_s``, sizes drawn alike."""
    rng = random.Random(seed)
    requests: list[Request] = []
    at = rng.expovariate(rate)
    while at < duration_s:
        prompt = rng.randint(*PROMPT_RANGE)
        output = rng.choices(OUTPUT_CHOICES, OUTPUT_WEIGHTS)[0]
        requests.append(Request(len(requests), at, prompt, output))
        at += rng.expovariate(rate)
    return requests


def service_seconds(
    prompt_tokens: float, output_tokens: float, factor: float, running: int
) -> float:
    """One request's time on a node of speed ``factor`` with ``running`` sequences throughout."""
    prefill = prefill_seconds(
        int(prompt_tokens), prefill_ms=PREFILL_MS, gpu_factor=factor, speed=1.0
    )
    per_token = decode_seconds(running=running, decode_ms=DECODE_MS, gpu_factor=factor, speed=1.0)
    return prefill + output_tokens * per_token


def capacity_rps(factors: Iterable[float], parallel: int) -> float:
    """Requests per second the cluster completes with every slot busy all the time: the
    100 % the load levels are fractions of."""
    return sum(
        parallel / service_seconds(mean_prompt_tokens(), mean_output_tokens(), f, parallel)
        for f in factors
    )


@dataclass(slots=True)
class _Job:
    key: int
    prompt_tokens: int
    prefill_s: float  # left, once admitted; fixed at admission, as the simulator sleeps it
    tokens: float  # left to decode
    admitted: bool = False


@dataclass
class NodeModel:
    """The ideal router's picture of one node: what runs there and what waits for it."""

    factor: float
    parallel: int
    running: list[_Job] = field(default_factory=list)
    waiting: deque[_Job] = field(default_factory=deque)
    updated: float = 0.0

    def _admit(self, job: _Job) -> None:
        job.admitted = True
        job.prefill_s = prefill_seconds(
            job.prompt_tokens, prefill_ms=PREFILL_MS, gpu_factor=self.factor, speed=1.0
        )
        self.running.append(job)

    def add(self, key: int, prompt_tokens: int, output_tokens: int, now: float) -> bool:
        """Account a request sent to this node; True when it got a slot at once."""
        self.advance(now)
        job = _Job(key, prompt_tokens, 0.0, float(output_tokens))
        if len(self.running) < self.parallel and not self.waiting:
            self._admit(job)
            return True
        self.waiting.append(job)
        return False

    def complete(self, key: int, now: float) -> None:
        """The request's answer arrived: free its slot for the first waiting request."""
        self.advance(now)
        self.running = [j for j in self.running if j.key != key]
        while self.waiting and len(self.running) < self.parallel:
            self._admit(self.waiting.popleft())

    def set_factor(self, factor: float, now: float) -> None:
        self.advance(now)
        self.factor = factor

    def advance(self, now: float) -> None:
        """Run the fluid forward to ``now``. A request the model thinks finished keeps its
        slot until its answer actually arrives (``complete``)."""
        if now > self.updated:
            _run(self.running, [], self.factor, self.parallel, now - self.updated, None)
        self.updated = max(self.updated, now)

    def expected_finish(self, prompt_tokens: int, output_tokens: int, now: float) -> float:
        """Seconds from ``now`` until a request added now would finish here."""
        self.advance(now)
        # Requests the model has finished are about to answer: their slots count as free.
        running = [
            _Job(j.key, j.prompt_tokens, j.prefill_s, j.tokens, True)
            for j in self.running
            if j.prefill_s > _DONE or j.tokens > _DONE
        ]
        waiting = [_Job(j.key, j.prompt_tokens, 0.0, j.tokens) for j in self.waiting]
        target = _Job(-1, prompt_tokens, 0.0, float(output_tokens))
        waiting.append(target)
        return _run(running, waiting, self.factor, self.parallel, math.inf, target)


def _run(
    running: list[_Job],
    waiting: list[_Job],
    factor: float,
    parallel: int,
    horizon: float,
    target: _Job | None,
) -> float:
    """Advance the fluid by ``horizon`` seconds, or until ``target`` finishes; returns the
    time that took. Finished jobs leave (freeing slots for ``waiting``) only when a target
    is followed, since otherwise the real answers say when they leave."""
    elapsed = 0.0
    while True:
        if target is not None:
            running[:] = [j for j in running if j.prefill_s > _DONE or j.tokens > _DONE]
            while waiting and len(running) < parallel:
                job = waiting.pop(0)
                job.admitted = True
                job.prefill_s = prefill_seconds(
                    job.prompt_tokens, prefill_ms=PREFILL_MS, gpu_factor=factor, speed=1.0
                )
                running.append(job)
            if target.admitted and target not in running:
                return elapsed
        per_token = decode_seconds(
            running=len(running), decode_ms=DECODE_MS, gpu_factor=factor, speed=1.0
        )
        ends = [
            j.prefill_s if j.prefill_s > _DONE else j.tokens * per_token
            for j in running
            if j.prefill_s > _DONE or j.tokens > _DONE
        ]
        if not ends:
            return elapsed
        step = min(min(ends), horizon - elapsed)
        for job in running:
            if job.prefill_s > _DONE:
                job.prefill_s = max(job.prefill_s - step, 0.0)
            elif job.tokens > _DONE:
                job.tokens = max(job.tokens - step / per_token, 0.0)
        elapsed += step
        if elapsed >= horizon:
            return elapsed


def choose_least_finish(models: Sequence[NodeModel], prompt: int, output: int, now: float) -> int:
    """The ideal router's choice: the node where this request would finish first."""
    finishes = [m.expected_finish(prompt, output, now) for m in models]
    return min(range(len(models)), key=finishes.__getitem__)


def choose_least_in_flight(in_flight: Sequence[int], parallel: int, rng: random.Random) -> int:
    """Least in-flight among nodes with a free slot (ties at random); -1 when all are full."""
    free = [i for i, n in enumerate(in_flight) if n < parallel]
    if not free:
        return -1
    fewest = min(in_flight[i] for i in free)
    return rng.choice([i for i in free if in_flight[i] == fewest])


# --- summaries ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as `clawdbot loadtest` reports); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def window_p99(
    samples: Iterable[tuple[float, float]], start: float, width: float, count: int
) -> list[float]:
    """p99 of the latencies of the (sent at, latency) samples in each of ``count`` windows
    of ``width`` seconds from ``start``, by when each request was sent."""
    buckets: list[list[float]] = [[] for _ in range(count)]
    for at, latency in samples:
        index = math.floor((at - start) / width)
        if 0 <= index < count:
            buckets[index].append(latency)
    return [percentile(bucket, 99) for bucket in buckets]


def recovered_after(ratios: Sequence[float], width: float, limit: float) -> float | None:
    """Seconds from the first window until every later window's ratio is within ``limit``;
    None when the last window is still over it."""
    for index in range(len(ratios)):
        if all(r <= limit for r in ratios[index:] if not math.isnan(r)):
            return index * width
    return None
