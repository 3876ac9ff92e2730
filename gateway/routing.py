"""Routing by expected completion time: what the admission script (gateway/admission.py,
ADMIT) is told about a request and its candidate nodes, what a finished request teaches it
about a node's speed (RELEASE), and how a decision is explained. Pure.

The choice, made in one Lua call shared by every gateway process:

    seconds on node = (prompt − tokens cached there) / prefill speed
                      + output / decode speed × (1 + slowdown × sequences already running)

taken among nodes with a free slot (or, when none has one, the shortest queue measured the
same way), where the speeds are one sequence's tokens per second on that node for that model:
learned from its answers, blended with its GPU-type score while the samples are few or old.
The tokens cached are those of the conversation's prefix on the node that served it
(gateway.prefixes). Temperature and health scale every speed as the weights always did;
the same-GPU-type preference after a failure still ranks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.prefixes import NONE, Prefixes
from gateway.snapshot import Route

# The prior's absolute speed: one sequence's decode tokens per second for each point of GPU
# score (an A10, 100, decodes a 32B model at about 30 tokens/s), and prefill's speed as a
# multiple of decode's. Only the ratios between nodes matter until one node is learned; then
# the learned nodes set the scale for the rest.
PRIOR_DECODE_PER_SCORE = 0.3
PRIOR_PREFILL_RATIO = 60.0
# A stream's reader starts on the first token: its decode time counts only this much in the
# choice (time to first token, then reading pace), an answer without streaming counts whole.
STREAM_PACE = 0.25
MAX_SAMPLES = 1000.0  # the running average's sample count saturates here
# Samples from answers this short say more about overheads than speed.
MIN_DECODE_TOKENS = 4
MIN_PREFILL_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Request:
    """What routing needs to know of one request."""

    model: str  # the profile that serves it
    prompt_tokens: int
    output_tokens: int | None  # max_tokens as clamped; None: the model's usual answer length
    prefixes: Prefixes = NONE
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    slowdown: float
    speed_tau_ms: int
    trust_ms: int
    min_samples: float
    affinity: bool
    affinity_ttl_ms: int
    affinity_max: int


def admit_args(request: Request | None, policy: Policy, routes: list[Route]) -> list[Any]:
    """ADMIT's arguments from its 13th on: the request, its prefixes, then 7 per node."""
    prefixes = request.prefixes if request is not None and policy.affinity else NONE
    args: list[Any] = [
        request.model if request else "",
        request.prompt_tokens if request else 0,
        -1 if request is None or request.output_tokens is None else request.output_tokens,
        policy.slowdown,
        PRIOR_DECODE_PER_SCORE,
        PRIOR_PREFILL_RATIO,
        policy.min_samples,
        policy.trust_ms,
        policy.affinity_ttl_ms,
        policy.affinity_max,
        len(prefixes.record),
        len(prefixes.lookups),
        STREAM_PACE if request is not None and request.stream else 1.0,
        *prefixes.record,
    ]
    for identity, cached in prefixes.lookups:
        args += [identity, cached]
    for route in routes:
        node = route.node
        prior = route.override or node.prior or route.weight
        args += [
            node.name,
            node.max_concurrent,
            node.queue_size,
            prior,
            node.live,
            node.busy,
            node.gpu_type,
        ]
    return args


@dataclass(frozen=True, slots=True)
class Timing:
    """One answer as the gateway timed it on the node (seconds, from sending the request)."""

    service_s: float  # until the answer's last byte
    first_token_s: float | None  # until its first token (streams only)
    prompt_tokens: int  # what the node had to prefill (the prompt, less what it had cached)
    completion_tokens: int


def speed_sample(timing: Timing) -> tuple[float, float] | None:
    """The decode and prefill tokens per second one answer shows, as if its sequence had the
    GPU to itself (RELEASE normalises the decode speed by the sequences that shared it), 0
    where this answer says nothing of one, or None when it says nothing at all.

    A stream shows both: the first token came after the prefill and one decoded token, the
    rest at the decode speed. An answer without streaming shows only its total time, taken as
    the prefill (at the prior's ratio to decode) plus the decode."""
    tokens = timing.completion_tokens
    first = timing.first_token_s
    if first is None:
        if tokens < MIN_DECODE_TOKENS or timing.service_s <= 0:
            return None
        work = tokens + timing.prompt_tokens / PRIOR_PREFILL_RATIO
        return work / timing.service_s, 0.0
    decode = prefill = 0.0
    decode_s = timing.service_s - first
    one = 0.0
    if tokens >= MIN_DECODE_TOKENS and decode_s > 0:
        one = decode_s / (tokens - 1)
        decode = (tokens - 1) / decode_s
    prefill_s = first - one
    if timing.prompt_tokens >= MIN_PREFILL_TOKENS and prefill_s > 0:
        prefill = timing.prompt_tokens / prefill_s
    if decode <= 0 and prefill <= 0:
        return None
    return decode, prefill


# One process learns from at most one answer per node and model this often: at thousands of
# answers a second, folding in every one would cost each request Redis work and teach no
# more, the running average's time constant being seconds.
LEARN_EVERY_S = 0.01


class SampleGate:
    """Which answers a process learns node speeds from (LEARN_EVERY_S)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[tuple[str, str], float] = {}  # bounded: one per node and model

    def due(self, model: str, node: str, now: float) -> bool:
        key = (model, node)
        if now < self._next.get(key, 0.0):
            return False
        self._next[key] = now + LEARN_EVERY_S
        return True


def exact_sample(
    prompt_tokens: int, completion_tokens: int, timings: tuple[float, float]
) -> tuple[float, float] | None:
    """One sequence's decode and prefill tokens per second from the server's own split of
    the time (Ollama's prompt_eval_duration and eval_duration), as speed_sample for one
    running alone: exact where speed_sample must guess, so also for short prompts."""
    prefill_s, decode_s = timings
    decode = completion_tokens / decode_s if completion_tokens >= 1 and decode_s > 0 else 0.0
    prefill = prompt_tokens / prefill_s if prompt_tokens >= 1 and prefill_s > 0 else 0.0
    if decode <= 0 and prefill <= 0:
        return None
    return decode, prefill


def release_args(
    model: str,
    node: str,
    sample: tuple[float, float] | None,
    answer_tokens: int | None,
    policy: Policy,
    kept: float | None = None,
    running: int = 1,
    since: int = -1,
) -> list[Any]:
    """RELEASE's arguments 11 to 22 (empty: nothing learned). `sample` is for the sequence
    alone as far as the answer knows (speed_sample): RELEASE normalises it by the sequences
    that shared the GPU with it, `running` when it was admitted and as many as it finds at
    the end. `answer_tokens`: the answer's length, for the model's usual answer length; only
    from requests without max_tokens (a client's limit cuts answers short of their usual
    length, and routing uses the usual length only where there is no limit). `kept`: of the
    prefix the node was expected to hold, the share it held (cache_kept); `since`: the tokens
    the node had cached since it took that prefix (ADMIT's count; -1 unknown), from which
    RELEASE learns how many its cache holds."""
    if sample is None and answer_tokens is None and kept is None:
        return ["", "", 0, 0, 0, 0, 0, "", "", 1, 0, -1]
    decode, prefill = sample or (0.0, 0.0)
    return [
        model,
        node,
        round(decode, 4),
        round(prefill, 4),
        policy.speed_tau_ms,
        MAX_SAMPLES,
        PRIOR_PREFILL_RATIO,
        answer_tokens if answer_tokens is not None else "",
        round(kept, 3) if kept is not None else "",
        running,
        policy.slowdown,
        since if kept is not None else -1,
    ]


def cache_kept(expected: int, reported: int | None) -> float | None:
    """For a request sent to the node holding its conversation: the share of the `expected`
    cached prompt tokens the server says it did not prefill again (OpenAI usage's
    prompt_tokens_details.cached_tokens, which vLLM and SGLang report); None when unknown."""
    if expected <= 0 or reported is None:
        return None
    return min(max(reported / expected, 0.0), 1.0)


def affinity_label(prefixes: Prefixes, affine: str, chosen: str, enabled: bool) -> str:
    """hit: the node holding the prefix took it; rebalanced: it was too busy (or out of the
    running) and another did; miss: no node holds any prefix of it yet."""
    if not enabled or not prefixes.lookups:
        return ""
    if not affine:
        return "miss"
    return "hit" if affine == chosen else "rebalanced"


def reason(
    chosen: str, seconds: float, runner_up: str, runner_seconds: float, queued: bool = False
) -> str:
    """The X-Clawdbot-Route header: the chosen node's expected seconds and the runner-up's
    (`queued`: counting its wait for a slot there)."""
    text = f"{chosen} expected {seconds:.3f}s"
    if runner_up:
        text += f"; next {runner_up} {runner_seconds:.3f}s"
        if queued:
            text += " after queueing"
    return text
