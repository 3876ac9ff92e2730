"""The simulator's pure model: speeds, timing, tokens, truncation, answers, control payloads."""

from __future__ import annotations

import math

import orjson
import pytest

from simulator.engine import (
    PREFIX_BLOCK_TOKENS,
    AnswerRequest,
    ControlError,
    Faults,
    PrefixCache,
    SimConfig,
    answer_length,
    apply_control,
    apply_stops,
    cached_prompt_tokens,
    chat_prefix_text,
    cold_load_seconds,
    decode_seconds,
    effective_num_ctx,
    embedding_vector,
    estimate_chat_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    gpu_speed_factor,
    model_card,
    normalize_model_name,
    parse_keep_alive,
    plan_answer,
    prefill_seconds,
    prefix_block_hashes,
    schema_example,
    seed_for,
    tool_call_for,
    truncated_prompt_tokens,
    vllm_context_error,
)


@pytest.mark.parametrize(
    ("gpu", "factor"),
    [
        ("A10", 1.0),
        ("A100", 2.2),
        ("h100", 3.8),
        ("H200", 4.3),
        ("L40S", 1.8),
        ("RTX4090", 1.6),
        ("NVIDIA GeForce RTX 4090", 1.6),
        ("T4", 1.0),
    ],
)
def test_gpu_speed_factor(gpu: str, factor: float) -> None:
    assert gpu_speed_factor(gpu) == factor


def test_timing_scales_with_gpu_speed_and_concurrency() -> None:
    assert prefill_seconds(1000, prefill_ms=0.5, gpu_factor=1.0, speed=1.0) == pytest.approx(0.5)
    assert prefill_seconds(1000, prefill_ms=0.5, gpu_factor=2.0, speed=2.0) == pytest.approx(0.125)
    alone = decode_seconds(running=1, decode_ms=30, gpu_factor=1.0, speed=1.0)
    assert alone == pytest.approx(0.030)
    # 1 + 0.15 * (running - 1): five sequences make each token 60 % slower.
    five = decode_seconds(running=5, decode_ms=30, gpu_factor=1.0, speed=1.0)
    assert five == pytest.approx(0.030 * 1.6)
    assert decode_seconds(running=1, decode_ms=30, gpu_factor=3.8, speed=1.0) == pytest.approx(
        0.030 / 3.8
    )
    assert cold_load_seconds(cold_load_ms=500, speed=2.0) == pytest.approx(0.25)


def test_token_estimates() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    assert estimate_text_tokens("ééééé") == 2  # characters, not UTF-8 bytes
    messages = [
        {"role": "system", "content": "x" * 8},
        {"role": "user", "content": "y" * 9, "images": ["AAAA"]},
    ]
    assert estimate_chat_tokens(messages) == (4 + 2) + (4 + 3 + 256)
    parts = [{"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url"}]}]
    assert estimate_chat_tokens(parts) == 4 + 1 + 256
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert estimate_chat_tokens([], tools) == estimate_text_tokens(orjson.dumps(tools).decode())
    assert estimate_prompt_tokens("abcd", system="abcd", images=1, context=3) == 1 + 1 + 256 + 3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("0", 0.0),
        (0, 0.0),
        (120, 120.0),
        (2.5, 2.5),
        (-1, math.inf),
        ("-1m", math.inf),
    ],
)
def test_parse_keep_alive(value: object, seconds: float) -> None:
    assert parse_keep_alive(value, 300.0) == seconds


@pytest.mark.parametrize("value", ["300", "5 minutes", "", True, [1]])
def test_parse_keep_alive_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(value, 300.0)


def test_num_ctx_defaults_and_caps() -> None:
    assert effective_num_ctx(None, default=4096, trained=32768) == 4096
    assert effective_num_ctx(8192, default=4096, trained=32768) == 8192
    assert effective_num_ctx(100_000, default=4096, trained=32768) == 32768
    assert effective_num_ctx(0, default=4096, trained=2048) == 2048


def test_truncation_keeps_num_keep_plus_a_tail_of_about_half_the_window() -> None:
    assert truncated_prompt_tokens(4000, num_ctx=4096, num_keep=4) == 4000
    # block = (4096 - 4) // 2 = 2046; three blocks are erased from 10000 tokens.
    assert truncated_prompt_tokens(10_000, num_ctx=4096, num_keep=4) == 10_000 - 3 * 2046
    for prompt in (4097, 5000, 50_000, 160_000):
        kept = truncated_prompt_tokens(prompt, num_ctx=4096, num_keep=4)
        assert 4 + 2046 <= kept <= 4096


def test_vllm_context_error_messages() -> None:
    assert vllm_context_error(100, 50, 200) is None
    message = vllm_context_error(150, 100, 200)
    assert message == (
        "This model's maximum context length is 200 tokens. However, you requested 250 tokens "
        "(150 in the messages, 100 in the completion). Please reduce the length of the messages "
        "or completion."
    )
    no_max = vllm_context_error(200, None, 200)
    assert no_max is not None and no_max.startswith("This model's maximum context length is 200")


def test_answer_length_and_finish_reason() -> None:
    assert answer_length(None, 20) == (20, "stop")
    assert answer_length(-1, 20) == (20, "stop")
    assert answer_length(20, 20) == (20, "stop")
    assert answer_length(5, 20) == (5, "length")


def test_answers_are_deterministic_per_seed() -> None:
    first = plan_answer(AnswerRequest(seed=7), answer_tokens=12)
    again = plan_answer(AnswerRequest(seed=7), answer_tokens=12)
    other = plan_answer(AnswerRequest(seed=8), answer_tokens=12)
    assert first == again and first.text != other.text
    assert len(first.content) == first.eval_count == 12 and first.finish_reason == "stop"
    assert seed_for(42, "anything") == 42
    assert seed_for(None, "prompt") == seed_for(None, "prompt") != seed_for(None, "other")
    cut = plan_answer(AnswerRequest(seed=7, max_tokens=3), answer_tokens=12)
    assert (cut.eval_count, cut.finish_reason) == (3, "length")


def test_stop_sequences_cut_before_the_match() -> None:
    pieces, stopped = apply_stops(["Hello", " big", " world"], ["g w"])
    assert stopped and "".join(pieces) == "Hello bi"
    assert apply_stops(["a", "b"], []) == (["a", "b"], False)
    plan = plan_answer(AnswerRequest(seed=1), answer_tokens=10)
    word = plan.content[3]
    stopped_plan = plan_answer(AnswerRequest(seed=1, stops=(word,)), answer_tokens=10)
    assert stopped_plan.finish_reason == "stop"
    assert word not in stopped_plan.text and plan.text.startswith(stopped_plan.text)


def test_json_answers_are_valid_json() -> None:
    plan = plan_answer(AnswerRequest(seed=3, response_format="json"), answer_tokens=6)
    assert set(orjson.loads(plan.text)) == {"answer"} and len(plan.content) == 6
    short = plan_answer(
        AnswerRequest(seed=3, max_tokens=1, response_format="json"), answer_tokens=6
    )
    assert orjson.loads(short.text)["answer"]
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    shaped = plan_answer(AnswerRequest(seed=3, response_format=schema), answer_tokens=6)
    assert orjson.loads(shaped.text) == {"name": "example", "age": 1}


def test_tool_call_arguments_come_from_required_properties() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "book",
            "parameters": {
                "type": "object",
                "required": ["city", "nights", "pets", "tags", "unit", "where"],
                "properties": {
                    "city": {"type": "string"},
                    "nights": {"type": "integer"},
                    "pets": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "where": {
                        "type": "object",
                        "required": ["lat"],
                        "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    },
                    "optional": {"type": "string"},
                },
            },
        },
    }
    call = tool_call_for(tool, seed=5)
    assert call.name == "book" and call.id.startswith("call_")
    assert call.arguments == {
        "city": "example",
        "nights": 1,
        "pets": True,
        "tags": ["example"],
        "unit": "c",
        "where": {"lat": 1},
    }
    assert schema_example({"anyOf": [{"type": "null"}, {"type": "integer"}]}) == 1
    plan = plan_answer(AnswerRequest(seed=5, tool=tool, think=True), answer_tokens=10)
    assert plan.tool_call == call and plan.content == () and plan.thinking
    assert plan.eval_count == len(plan.thinking) + plan.tool_tokens


def test_embeddings_are_deterministic_unit_vectors() -> None:
    vector = embedding_vector("hello", 384)
    assert len(vector) == 384
    assert math.sqrt(sum(v * v for v in vector)) == pytest.approx(1.0)
    assert vector == embedding_vector("hello", 384) != embedding_vector("hello!", 384)


def test_model_cards() -> None:
    card = model_card("qwen3:32b")
    assert (card.family, card.parameter_size, card.quantization_level) == ("qwen3", "32B", "Q4_K_M")
    assert card.size_bytes > 0 and len(card.digest) == 64 and not card.embedding
    assert model_card("nomic-embed-text").embedding
    assert normalize_model_name("llama3") == "llama3:latest"
    assert normalize_model_name("Qwen/Qwen3-32B") == "Qwen/Qwen3-32B"


def test_apply_control_validates_and_resets() -> None:
    faults = apply_control(Faults(), {"error_rate": 0.5, "hang": True, "drop_mid_stream_after": 3})
    assert (faults.error_rate, faults.hang, faults.drop_mid_stream_after) == (0.5, True, 3)
    unchanged = apply_control(faults, {"hang": None})
    assert unchanged == faults
    cleared = apply_control(faults, {"drop_mid_stream_after": -1})
    assert cleared.drop_mid_stream_after is None and cleared.hang
    reset = apply_control(faults, {"reset": True, "engine_dead": True}, baseline_speed=2.0)
    assert reset == Faults(engine_dead=True, speed=2.0)
    bad_payloads: list[object] = [
        {"error_rate": 1.5},
        {"error_rate": True},
        {"error_status": 200},
        {"hang": "yes"},
        {"drop_mode": "explode"},
        {"speed": 0},
        {"bogus": 1},
        [],
    ]
    for bad in bad_payloads:
        with pytest.raises(ControlError):
            apply_control(Faults(), bad)


def test_config_validation_names_the_flag() -> None:
    SimConfig().validate()
    with pytest.raises(ValueError, match="--parallel"):
        SimConfig(parallel=0).validate()
    with pytest.raises(ValueError, match="--keep-alive"):
        SimConfig(keep_alive="soon").validate()
    with pytest.raises(ValueError, match="error_rate"):
        SimConfig(error_rate=2.0).validate()
    assert SimConfig(hang=True, drop_mid_stream_after=2).initial_faults() == Faults(
        hang=True, drop_mid_stream_after=2
    )


# --- prefix cache ---------------------------------------------------------------------------

BLOCK_CHARS = PREFIX_BLOCK_TOKENS * 4
SYSTEM = {"role": "system", "content": "You review code. " * 40}


def conversation(*turns: str) -> list[dict[str, str]]:
    messages = [SYSTEM]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


def test_block_hashes_are_chained_over_whole_blocks() -> None:
    text = "x" * (BLOCK_CHARS * 3 + 5)
    hashes = prefix_block_hashes(text)
    assert len(hashes) == 3  # the partial tail is not a block
    # Equal block texts at different positions hash differently: each covers its prefix.
    assert len(set(hashes)) == 3
    assert prefix_block_hashes(text[: BLOCK_CHARS * 2]) == hashes[:2]
    assert prefix_block_hashes("y" + text[1:])[0] != hashes[0]


def test_a_follow_up_turn_extends_the_previous_prompt() -> None:
    first = chat_prefix_text(conversation("Why does this crash? " * 50))
    second = chat_prefix_text(conversation("Why does this crash? " * 50, "Because.", "And now?"))
    assert second.startswith(first)
    shared = len(first) // BLOCK_CHARS
    assert prefix_block_hashes(second)[:shared] == prefix_block_hashes(first)
    other = chat_prefix_text([SYSTEM, {"role": "user", "content": "Something else " * 50}])
    common = prefix_block_hashes(other)
    # Only the shared system prompt's blocks are common to two conversations.
    same = sum(1 for a, b in zip(common, prefix_block_hashes(first), strict=False) if a == b)
    assert 0 < same < shared
    assert same == len(f"<system>{SYSTEM['content']}\x00<user>") // BLOCK_CHARS


def test_cached_tokens_never_cover_the_last_prompt_token() -> None:
    assert cached_prompt_tokens(0, 100) == 0
    assert cached_prompt_tokens(3, 100) == 3 * PREFIX_BLOCK_TOKENS
    assert cached_prompt_tokens(10, 100) == 99
    assert cached_prompt_tokens(1, 0) == 0


def test_prefix_cache_counts_leading_hits_only() -> None:
    cache = PrefixCache(1000 * PREFIX_BLOCK_TOKENS)
    a, b, c, d = (bytes([i]) * 12 for i in range(4))
    cache.insert([a, b, c])
    assert cache.lookup([a, b, c, d]) == 3
    assert cache.lookup([a, d, c]) == 1
    assert cache.lookup([d, a, b]) == 0


def test_prefix_cache_evicts_least_recent_chains_tail_first() -> None:
    cache = PrefixCache(4 * PREFIX_BLOCK_TOKENS)
    old = [b"old-%d" % i for i in range(3)]
    new = [b"new-%d" % i for i in range(3)]
    cache.insert(old)
    cache.insert(new)
    assert len(cache) == 4
    # Two of the old chain's blocks went, its tail first, so its head still hits.
    assert cache.lookup(old) == 1
    # That lookup refreshed the old head: the next insert evicts the new chain's tail instead.
    cache.insert([b"more"])
    assert cache.lookup(old) == 1
    assert cache.lookup(new) == 2


def test_prefix_cache_of_zero_keeps_nothing() -> None:
    cache = PrefixCache(0)
    cache.insert([b"a", b"b"])
    assert len(cache) == 0 and cache.lookup([b"a"]) == 0
