"""Pure model of a simulated GPU inference node.

Everything here is plain data and plain functions (no I/O, no clock, no event loop), so
the HTTP server in the rest of this package stays a thin layer and the arithmetic can be
unit-tested directly. This module must not import Django or other project modules: the
simulator also runs standalone in benchmarks.

Formulas (kept here so there is one place to read them):

* Token estimate: ``ceil(chars / 4)`` per text (characters = code points). A chat prompt is
  ``sum(4 + text_tokens(content) + 256 * images + text_tokens(tool call name + arguments))``
  over messages, plus ``text_tokens(json(tools))`` when tools are sent.
* Timing: with ``f = gpu_factor * speed``, prefill takes ``prompt_tokens * prefill_ms / f`` and
  each decoded token ``decode_ms / f * (1 + 0.15 * (running - 1))`` where ``running`` is the
  number of sequences decoding at that moment (this one included). A cold load takes
  ``cold_load_ms / speed``: loading is bound by disk and PCIe, not by the GPU's compute.
* Ollama silent truncation (llama.cpp context shift): keep ``num_keep`` tokens, drop whole
  blocks of ``(num_ctx - num_keep) // 2`` tokens from just after them until the rest fits.
* Prefix cache (as vLLM's automatic prefix caching): the prompt's canonical text is cut into
  blocks of ``PREFIX_BLOCK_TOKENS * CHARS_PER_TOKEN`` characters, each hashed with the hash
  of the block before it, so two prompts share exactly the blocks of their common prefix.
  A prompt's cached tokens are ``min(16 * leading blocks found, prompt_tokens - 1)`` (the last
  token is always computed, as in vLLM) and prefill pays only ``prompt_tokens - cached``.
  Each node keeps at most ``--prefix-cache-tokens // 16`` blocks, least recently used out first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Relative decode/prefill throughput against an A10 (the reference card).
GPU_SPEED_FACTORS: dict[str, float] = {
    "A10": 1.0,
    "A100": 2.2,
    "H100": 3.8,
    "H200": 4.3,
    "L40S": 1.8,
    "RTX4090": 1.6,
}

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 256
THINKING_TOKENS = 8
CONCURRENCY_SLOWDOWN = 0.15
DEFAULT_NUM_KEEP = 4
DEFAULT_KEEP_ALIVE_S = 300.0
PREFIX_BLOCK_TOKENS = 16
DEFAULT_PREFIX_CACHE_TOKENS = 65536

API_KINDS = ("ollama", "openai")
DROP_MODES = ("error", "abrupt")

_WORDS = (
    "the", "node", "answers", "with", "simulated", "tokens", "from", "a", "virtual",
    "gpu", "model", "context", "window", "keeps", "each", "request", "inside", "its",
    "slot", "while", "queue", "waits", "for", "stream", "chunks", "arrive", "in", "order",
    "and", "latency", "stays", "low", "when", "cache", "is", "warm", "gateway", "routes",
    "traffic", "to", "healthy", "nodes", "every", "second", "prompt", "length", "matters",
    "more", "than", "temperature", "here", "so", "we", "count", "characters", "not",
    "bytes", "quietly", "today", "again", "simply", "because", "it", "can",
)  # fmt: skip

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
_PARAM_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bm])\b")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Start-up configuration; every field maps to one CLI flag of ``python -m simulator``."""

    api: str = "ollama"
    # With api "openai": the server imitated (simulator.server_kinds), and how long its
    # /metrics takes to answer.
    server_kind: str = "vllm"
    metrics_delay_ms: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    control_port: int = 0
    gpu_type: str = "A100"
    models: tuple[str, ...] = ("qwen3:32b",)
    parallel: int = 4
    max_queue: int = 16
    decode_ms: float = 30.0
    prefill_ms: float = 0.5
    speed: float = 1.0
    cold_load_ms: float = 500.0
    preloaded: bool = False
    context_length: int = 32768
    default_num_ctx: int = 4096
    keep_alive: str = "5m"
    answer_tokens: int = 20
    embedding_dim: int = 384
    zero_latency: bool = False
    # Ollama before v0.30.9 ignores `truncate`/`shift` and always shortens an oversized prompt
    # silently: the case the gateway must detect from prompt_eval_count.
    ignore_truncate: bool = False
    fault_seed: int | None = None
    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    drop_mid_stream_after: int | None = None
    drop_mode: str = "error"
    refuse_connections: bool = False
    engine_dead: bool = False
    prefix_cache_tokens: int = DEFAULT_PREFIX_CACHE_TOKENS

    def validate(self) -> None:
        """Raise ValueError naming the flag when a value cannot work."""
        if self.api not in API_KINDS:
            raise ValueError(f"--api must be one of {', '.join(API_KINDS)}")
        if not self.models or any(not m.strip() for m in self.models):
            raise ValueError("--models needs at least one non-empty model name")
        checks = (
            (self.parallel >= 1, "--parallel must be >= 1"),
            (self.max_queue >= 0, "--max-queue must be >= 0"),
            (self.decode_ms >= 0, "--decode-ms must be >= 0"),
            (self.prefill_ms >= 0, "--prefill-ms must be >= 0"),
            (self.speed > 0, "--speed must be > 0"),
            (self.cold_load_ms >= 0, "--cold-load-ms must be >= 0"),
            (self.context_length >= 1, "--context-length must be >= 1"),
            (self.default_num_ctx >= 1, "--default-num-ctx must be >= 1"),
            (self.answer_tokens >= 1, "--answer-tokens must be >= 1"),
            (self.embedding_dim >= 1, "--embedding-dim must be >= 1"),
            (0 <= self.port <= 65535, "--port must be 0..65535"),
            (0 <= self.control_port <= 65535, "--control-port must be 0..65535"),
            (self.prefix_cache_tokens >= 0, "--prefix-cache-tokens must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        try:
            parse_keep_alive(self.keep_alive, DEFAULT_KEEP_ALIVE_S)
        except ValueError as exc:
            raise ValueError(f"--keep-alive: {exc}") from exc
        try:
            apply_control(Faults(), self.initial_fault_payload())
        except ControlError as exc:
            raise ValueError(f"fault flag: {exc}") from exc

    @property
    def gpu_factor(self) -> float:
        return gpu_speed_factor(self.gpu_type)

    @property
    def keep_alive_s(self) -> float:
        return parse_keep_alive(self.keep_alive, DEFAULT_KEEP_ALIVE_S)

    def initial_fault_payload(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "hang": self.hang,
            "drop_mid_stream_after": (
                -1 if self.drop_mid_stream_after is None else self.drop_mid_stream_after
            ),
            "drop_mode": self.drop_mode,
            "refuse_connections": self.refuse_connections,
            "engine_dead": self.engine_dead,
            "speed": self.speed,
        }

    def initial_faults(self) -> Faults:
        return apply_control(Faults(speed=self.speed), self.initial_fault_payload())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        data["gpu_factor"] = self.gpu_factor
        return data


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected failures; replaced wholesale by ``apply_control`` so readers see one state."""

    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    drop_mid_stream_after: int | None = None
    drop_mode: str = "error"
    refuse_connections: bool = False
    engine_dead: bool = False
    speed: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ControlError(ValueError):
    """A control payload that cannot be applied; the message goes back in a 400."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_control(current: Faults, payload: object, *, baseline_speed: float = 1.0) -> Faults:
    """Return ``current`` updated from a control payload.

    A key that is absent or null leaves the field unchanged, so clearing the optional
    ``drop_mid_stream_after`` takes ``-1``. ``"reset": true`` first clears every fault
    (speed back to ``baseline_speed``), then the other keys apply.
    """
    if not isinstance(payload, Mapping):
        raise ControlError("control body must be a JSON object")
    known = {f.name for f in dataclasses.fields(Faults)} | {"reset"}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise ControlError(f"unknown control keys: {', '.join(map(str, unknown))}")
    updates: dict[str, Any] = {}
    reset = payload.get("reset")
    if reset is not None and not isinstance(reset, bool):
        raise ControlError("reset must be a boolean")
    base = Faults(speed=baseline_speed) if reset else current

    value = payload.get("error_rate")
    if value is not None:
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ControlError("error_rate must be a number between 0 and 1")
        updates["error_rate"] = float(value)
    value = payload.get("error_status")
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or not 400 <= value <= 599:
            raise ControlError("error_status must be an integer between 400 and 599")
        updates["error_status"] = value
    for name in ("hang", "refuse_connections", "engine_dead"):
        value = payload.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise ControlError(f"{name} must be a boolean")
            updates[name] = value
    value = payload.get("drop_mid_stream_after")
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise ControlError("drop_mid_stream_after must be an integer >= 0, or -1 to clear")
        updates["drop_mid_stream_after"] = None if value == -1 else value
    value = payload.get("drop_mode")
    if value is not None:
        if value not in DROP_MODES:
            raise ControlError(f"drop_mode must be one of {', '.join(DROP_MODES)}")
        updates["drop_mode"] = value
    value = payload.get("speed")
    if value is not None:
        if not _is_number(value) or not value > 0 or not math.isfinite(value):
            raise ControlError("speed must be a number > 0")
        updates["speed"] = float(value)
    return dataclasses.replace(base, **updates)


# --- speed and timing -------------------------------------------------------------------


def gpu_speed_factor(gpu_type: str) -> float:
    """Throughput relative to an A10; unknown cards count as an A10."""
    key = gpu_type.upper().replace(" ", "").replace("-", "")
    key = key.removeprefix("NVIDIA").removeprefix("GEFORCE").removeprefix("RTX")
    if key == "4090":
        key = "RTX4090"
    return GPU_SPEED_FACTORS.get(key, 1.0)


def prefill_seconds(
    prompt_tokens: int, *, prefill_ms: float, gpu_factor: float, speed: float
) -> float:
    return prompt_tokens * prefill_ms / (gpu_factor * speed) / 1000.0


def decode_seconds(*, running: int, decode_ms: float, gpu_factor: float, speed: float) -> float:
    """Time for one output token while ``running`` sequences share the GPU."""
    slowdown = 1.0 + CONCURRENCY_SLOWDOWN * max(running - 1, 0)
    return decode_ms / (gpu_factor * speed) * slowdown / 1000.0


def cold_load_seconds(*, cold_load_ms: float, speed: float) -> float:
    return cold_load_ms / speed / 1000.0


# --- tokens ------------------------------------------------------------------------------


def estimate_text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        # OpenAI content parts: text counts by characters, anything else is an image.
        total = 0
        for part in content:
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                total += estimate_text_tokens(text) if isinstance(text, str) else 0
            elif isinstance(part, str):
                total += estimate_text_tokens(part)
            else:
                total += IMAGE_TOKENS
        return total
    return 0


def _tool_call_tokens(tool_calls: object) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        name = function.get("name")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        total += estimate_text_tokens((name if isinstance(name, str) else "") + arguments)
    return total


def estimate_chat_tokens(messages: Sequence[object], tools: object = None) -> int:
    """Prompt tokens of a chat request (Ollama native or OpenAI shaped messages)."""
    total = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        total += MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
        images = message.get("images")
        if isinstance(images, list):
            total += IMAGE_TOKENS * len(images)
        total += _tool_call_tokens(message.get("tool_calls"))
    if tools:
        total += estimate_text_tokens(orjson.dumps(tools).decode())
    return total


def estimate_prompt_tokens(
    prompt: str, *, system: str = "", suffix: str = "", images: int = 0, context: int = 0
) -> int:
    """Prompt tokens of a raw-prompt request (``/api/generate``, ``/v1/completions``)."""
    return (
        estimate_text_tokens(prompt)
        + estimate_text_tokens(system)
        + estimate_text_tokens(suffix)
        + IMAGE_TOKENS * images
        + context
    )


def chat_seed_text(messages: Sequence[object]) -> str:
    parts: list[str] = []
    for message in messages:
        if isinstance(message, Mapping):
            content = message.get("content")
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            parts.append(f"{message.get('role')}\x00{text}")
    return "\x01".join(parts)


def seed_for(explicit: object, text: str) -> int:
    """An explicit integer seed wins; otherwise the prompt decides, stably across runs."""
    if isinstance(explicit, int) and not isinstance(explicit, bool):
        return explicit
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# --- prefix cache ------------------------------------------------------------------------


def chat_prefix_text(messages: Sequence[object]) -> str:
    """The text a chat prompt's cache blocks are cut from: each message on its own, so the
    messages of turn N are a prefix of turn N+1's (the template of a real server does the
    same: earlier messages render identically)."""
    parts: list[str] = []
    for message in messages:
        if isinstance(message, Mapping):
            content = message.get("content")
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            calls = message.get("tool_calls")
            if calls:
                text += orjson.dumps(calls).decode()
            parts.append(f"<{message.get('role')}>{text}\x00")
    return "".join(parts)


def prefix_block_hashes(text: str) -> list[bytes]:
    """Chained hashes of the text's full blocks: block i's hash covers blocks 0..i."""
    size = PREFIX_BLOCK_TOKENS * CHARS_PER_TOKEN
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(text) - size + 1, size):
        previous = hashlib.blake2b(
            previous + text[start : start + size].encode(), digest_size=12
        ).digest()
        hashes.append(previous)
    return hashes


def cached_prompt_tokens(hit_blocks: int, prompt_tokens: int) -> int:
    """Tokens prefill skips: whole blocks found, never the prompt's last token."""
    return max(min(hit_blocks * PREFIX_BLOCK_TOKENS, prompt_tokens - 1), 0)


class PrefixCache:
    """A node's bounded LRU of prompt blocks (by chained hash). Not thread-safe; the
    simulator runs one event loop."""

    __slots__ = ("_blocks", "capacity_blocks")

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_blocks = capacity_tokens // PREFIX_BLOCK_TOKENS
        self._blocks: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, hashes: Sequence[bytes]) -> int:
        """Leading blocks present; those are touched so they stay."""
        hits = 0
        for block in hashes:
            if block not in self._blocks:
                break
            hits += 1
        self._touch(hashes[:hits])
        return hits

    def insert(self, hashes: Sequence[bytes]) -> None:
        """Keep ``hashes`` as most recent, evicting the least recently used past capacity."""
        if self.capacity_blocks <= 0:
            return
        self._touch(hashes[: self.capacity_blocks])
        blocks = self._blocks
        while len(blocks) > self.capacity_blocks:
            del blocks[next(iter(blocks))]

    def _touch(self, hashes: Sequence[bytes]) -> None:
        # Last block first: when a prompt's blocks are equally old, its tail goes before its
        # head (vLLM's rule), since a chain without its head is of no use to anyone.
        blocks = self._blocks
        for block in reversed(hashes):
            blocks.pop(block, None)
            blocks[block] = None


# --- context window ----------------------------------------------------------------------


def effective_num_ctx(requested: object, *, default: int, trained: int) -> int:
    """Ollama's window: ``options.num_ctx`` if positive, else the default; capped at trained."""
    if isinstance(requested, int | float) and not isinstance(requested, bool) and requested > 0:
        return min(int(requested), trained)
    return min(default, trained)


def truncated_prompt_tokens(prompt_tokens: int, *, num_ctx: int, num_keep: int) -> int:
    """Tokens Ollama actually evaluates once context shift trims an oversized prompt."""
    if prompt_tokens <= num_ctx:
        return prompt_tokens
    keep = min(max(num_keep, 0), num_ctx // 2)
    block = (num_ctx - keep) // 2
    if block <= 0:
        return num_ctx
    erased_blocks = (prompt_tokens - keep - block) // block
    return prompt_tokens - erased_blocks * block


def vllm_context_error(
    prompt_tokens: int, max_tokens: int | None, max_model_len: int
) -> str | None:
    """vLLM (v0.5 to v0.10) ``_validate_input`` message, or None when the request fits."""
    if max_tokens is None:
        if prompt_tokens >= max_model_len:
            return (
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {prompt_tokens} tokens in the messages, Please reduce the length of "
                "the messages."
            )
        return None
    if prompt_tokens + max_tokens > max_model_len:
        return (
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion."
        )
    return None


@functools.lru_cache(maxsize=256)
def parse_go_duration(text: str) -> float:
    """Seconds for a Go ``time.ParseDuration`` string such as ``"5m"`` or ``"1h30m"``."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(body) or position == 0:
        if re.fullmatch(r"\d+(?:\.\d*)?", body):
            raise ValueError(f'time: missing unit in duration "{text}"')
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: object, default: float) -> float:
    """Seconds to keep a model loaded: numbers are seconds, strings Go durations, <0 forever.

    Returns ``math.inf`` for "forever" and ``default`` when the value is absent.
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("keep_alive must be a duration string or a number of seconds")
    seconds = float(value) if not isinstance(value, str) else parse_go_duration(value)
    return math.inf if seconds < 0 else seconds


# --- answers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerPlan:
    """What the node will say, decided before any delay is paid.

    ``content`` and ``thinking`` are token pieces: each is one streamed chunk.
    """

    content: tuple[str, ...]
    finish_reason: str
    thinking: tuple[str, ...] = ()
    tool_call: ToolCall | None = None
    tool_tokens: int = 0

    @property
    def eval_count(self) -> int:
        return len(self.thinking) + len(self.content) + self.tool_tokens

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """The parts of a generation request that shape the answer, API-neutral."""

    seed: int
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    response_format: str | dict[str, Any] | None = None
    think: bool = False
    tool: Mapping[str, Any] | None = None


def answer_length(max_tokens: int | None, answer_tokens: int) -> tuple[int, str]:
    """Output length and its finish reason; a negative max means "no limit" (Ollama -1/-2)."""
    if max_tokens is None or max_tokens < 0 or max_tokens >= answer_tokens:
        return answer_tokens, "stop"
    return max_tokens, "length"


_SPACED_WORDS = tuple(" " + word for word in _WORDS)
_FIRST_WORDS = tuple(word.capitalize() for word in _WORDS)


def text_tokens(seed: int, count: int, *, final_period: bool) -> list[str]:
    """``count`` word pieces chosen by ``seed``; the first capitalised, later ones spaced."""
    if count <= 0:
        return []
    # One SHAKE digest gives a byte per word: stable across Python versions and much cheaper
    # than a random.Random per request, which matters on the zero-latency benchmark path.
    picks = hashlib.shake_256(b"%d" % seed).digest(count)
    size = len(_WORDS)
    pieces = [_SPACED_WORDS[b % size] for b in picks]
    pieces[0] = _FIRST_WORDS[picks[0] % size]
    if final_period:
        pieces[-1] += "."
    return pieces


def apply_stops(pieces: Sequence[str], stops: Sequence[str]) -> tuple[list[str], bool]:
    """Cut the token pieces just before the first stop sequence; True when one was hit."""
    stops = [s for s in stops if s]
    if not stops:
        return list(pieces), False
    text = ""
    kept: list[str] = []
    for piece in pieces:
        before = len(text)
        text += piece
        hits = [i for s in stops if (i := text.find(s, max(0, before - len(s) + 1))) >= 0]
        kept.append(piece)
        if hits:
            # The match may start inside an earlier piece, so re-cut the pieces at it.
            cut = min(hits)
            out: list[str] = []
            position = 0
            for kept_piece in kept:
                if position + len(kept_piece) > cut:
                    if cut > position:
                        out.append(kept_piece[: cut - position])
                    break
                out.append(kept_piece)
                position += len(kept_piece)
            return out, True
    return kept, False


def schema_example(schema: object, *, all_properties: bool = False, word: str = "example") -> Any:
    """A value that satisfies a (simple) JSON schema.

    Objects get their ``required`` properties (all properties when ``all_properties``).
    """
    if not isinstance(schema, Mapping):
        return word
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [
                o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")
            ]
            return schema_example((usable or options)[0], all_properties=all_properties, word=word)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = (
            list(properties) if all_properties else (required if isinstance(required, list) else [])
        )
        return {
            str(name): schema_example(
                properties.get(name), all_properties=all_properties, word=word
            )
            for name in names
        }
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping) and items:
            return [schema_example(items, all_properties=all_properties, word=word)]
        return []
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return word


def tool_call_for(tool: Mapping[str, Any], seed: int) -> ToolCall:
    """One call to ``tool`` (OpenAI/Ollama tool shape) with arguments from its required props."""
    function = tool.get("function")
    function = function if isinstance(function, Mapping) else tool
    name = function.get("name")
    arguments = schema_example(function.get("parameters") or {"type": "object"}, word="example")
    if not isinstance(arguments, dict):
        arguments = {}
    call_id = "call_" + hashlib.blake2b(str(seed).encode(), digest_size=4).hexdigest()
    return ToolCall(id=call_id, name=str(name or "tool"), arguments=arguments)


def _split_every(text: str, size: int) -> tuple[str, ...]:
    return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


def plan_answer(request: AnswerRequest, *, answer_tokens: int) -> AnswerPlan:
    """Decide the whole answer: thinking, then a tool call, JSON, or plain text."""
    thinking: tuple[str, ...] = ()
    if request.think:
        thinking = tuple(text_tokens(request.seed ^ 0x5EED, THINKING_TOKENS, final_period=True))
    if request.tool is not None:
        call = tool_call_for(request.tool, request.seed)
        tokens = estimate_text_tokens(call.name + orjson.dumps(call.arguments).decode())
        return AnswerPlan(
            content=(), finish_reason="stop", thinking=thinking, tool_call=call, tool_tokens=tokens
        )
    if isinstance(request.response_format, Mapping):
        value = schema_example(request.response_format, all_properties=True)
        text = orjson.dumps(value).decode()
        return AnswerPlan(
            content=_split_every(text, CHARS_PER_TOKEN), finish_reason="stop", thinking=thinking
        )
    count, finish = answer_length(request.max_tokens, answer_tokens)
    if request.response_format == "json":
        # Valid JSON even when cut by the max: the wrapper rides on the first and last pieces.
        pieces = text_tokens(request.seed, max(count, 1), final_period=False)
        pieces[0] = '{"answer": "' + pieces[0]
        pieces[-1] += '"}'
        return AnswerPlan(content=tuple(pieces), finish_reason=finish, thinking=thinking)
    pieces = text_tokens(request.seed, count, final_period=finish == "stop")
    pieces, stopped = apply_stops(pieces, request.stops)
    return AnswerPlan(
        content=tuple(pieces), finish_reason="stop" if stopped else finish, thinking=thinking
    )


def context_tokens(seed: int, count: int) -> list[int]:
    """A stand-in for Ollama's ``context`` token array (deterministic, not meaningful)."""
    base = seed % 100_003
    return [(base + i * 7919) % 151_936 for i in range(count)]


# --- embeddings --------------------------------------------------------------------------


def embedding_vector(text: str, dim: int) -> list[float]:
    """A unit-length vector that depends only on ``text`` and ``dim``."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dim)
    values = struct.unpack(f"<{dim}h", raw)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


# --- model metadata ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelCard:
    name: str
    family: str
    parameter_count: int
    parameter_size: str
    quantization_level: str
    size_bytes: int
    digest: str
    embedding: bool


def normalize_model_name(name: str) -> str:
    """Ollama names default their tag to ``latest``; OpenAI-style ids stay as given."""
    if "/" in name or ":" in name:
        return name
    return f"{name}:latest"


def model_card(name: str) -> ModelCard:
    base = name.rsplit("/", 1)[-1].split(":", 1)[0].lower()
    family = re.split(r"[.\-_]", base, maxsplit=1)[0] or "llama"
    match = _PARAM_SIZE.search(name.lower())
    if match:
        scale = 1e9 if match.group(2) == "b" else 1e6
        count = int(float(match.group(1)) * scale)
        size_label = f"{match.group(1)}{match.group(2).upper()}"
    else:
        count = 8_000_000_000
        size_label = "8B"
    embedding = "embed" in name.lower()
    quantization = "F16" if embedding else "Q4_K_M"
    # Q4_K_M averages about 4.8 bits per weight; F16 is 2 bytes.
    size = count * 2 if embedding else int(count * 0.6)
    digest = hashlib.sha256(name.encode()).hexdigest()
    return ModelCard(
        name=name,
        family=family,
        parameter_count=count,
        parameter_size=size_label,
        quantization_level=quantization,
        size_bytes=size,
        digest=digest,
        embedding=embedding,
    )
