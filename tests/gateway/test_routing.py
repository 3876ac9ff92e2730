"""What routing learns from one answer and how it explains a decision (gateway.routing)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import prefixes, routing
from gateway.admission import DEFAULT_ROUTING
from gateway.upstreams import ollama
from tests.gateway.admitting import route


def test_a_stream_shows_prefill_and_decode_speed() -> None:
    # 2,000 prompt tokens prefilled in 0.5 s, then 1 token, then 99 more in 3.3 s.
    timing = routing.Timing(
        service_s=0.5 + 0.033 + 3.3, first_token_s=0.533, prompt_tokens=2000,
        completion_tokens=100,
    )  # fmt: skip
    decode, prefill = routing.speed_sample(timing) or (0, 0)
    assert decode == pytest.approx(30.0, rel=0.01)
    assert prefill == pytest.approx(4000.0, rel=0.01)


def test_an_answer_too_short_to_say_anything_teaches_nothing() -> None:
    assert routing.speed_sample(routing.Timing(0.1, None, 10, 2)) is None
    # A short prompt's first token says nothing of prefill; the decode still counts.
    decode, prefill = routing.speed_sample(routing.Timing(1.0, 0.1, 10, 10)) or (0, 9)
    assert prefill == 0 and decode == pytest.approx(10.0)


def test_nothing_learned_is_sent_as_empty_arguments() -> None:
    args = routing.release_args("m", "n", None, None, DEFAULT_ROUTING)
    assert len(args) == 12 and args[0] == ""
    # A short answer still counts towards the model's usual answer length.
    assert routing.release_args("m", "n", None, 3, DEFAULT_ROUTING)[7] == 3


def test_how_much_of_the_expected_prefix_the_node_still_held() -> None:
    assert routing.cache_kept(4000, 4000) == 1.0
    assert routing.cache_kept(4000, 1000) == 0.25
    assert routing.cache_kept(4000, 5000) == 1.0
    assert routing.cache_kept(4000, None) is None
    assert routing.cache_kept(0, 10) is None


def test_admit_arguments_carry_the_request_its_prefixes_and_seven_fields_a_node() -> None:
    found = prefixes.Prefixes(("rec",), (("a", 100), ("b", 50)))
    request = routing.Request("m", 1000, None, found)
    args = routing.admit_args(request, DEFAULT_ROUTING, [route("x"), route("y")])
    assert args[:3] == ["m", 1000, -1]
    assert args[10:14] == [1, 2, 1.0, "rec"]
    assert args[14:18] == ["a", 100, "b", 50]
    assert len(args) == 18 + 2 * 7
    streamed = routing.Request("m", 1000, None, found, stream=True)
    assert routing.admit_args(streamed, DEFAULT_ROUTING, [])[12] == routing.STREAM_PACE
    off = dataclasses.replace(DEFAULT_ROUTING, affinity=False)
    assert routing.admit_args(request, off, [])[10:12] == [0, 0]


@pytest.mark.parametrize(
    ("affine", "chosen", "label"),
    [("", "a", "miss"), ("a", "a", "hit"), ("b", "a", "rebalanced")],
)
def test_affinity_labels(affine: str, chosen: str, label: str) -> None:
    found = prefixes.Prefixes(("r",), (("l", 10),))
    assert routing.affinity_label(found, affine, chosen, True) == label
    assert routing.affinity_label(found, affine, chosen, False) == ""
    assert routing.affinity_label(prefixes.NONE, affine, chosen, True) == ""


def test_the_reason_names_the_node_and_the_runner_up() -> None:
    assert routing.reason("h100", 1.23456, "a10", 3.5) == "h100 expected 1.235s; next a10 3.500s"
    assert routing.reason("only", 0.5, "", -1) == "only expected 0.500s"
    assert routing.reason("a", 2.0, "b", 3.0, queued=True) == (
        "a expected 2.000s; next b 3.000s after queueing"
    )


def test_an_ollama_answer_times_its_own_prefill_and_decode() -> None:
    final = {"prompt_eval_count": 11, "prompt_eval_duration": 770_000_000,
             "eval_count": 5, "eval_duration": 25_000_000}  # fmt: skip
    timings = ollama.native_timings(final)
    assert timings == pytest.approx((0.77, 0.025))
    assert routing.exact_sample(11, 5, timings or (0, 0)) == pytest.approx((200.0, 11 / 0.77))
    assert ollama.native_timings({"eval_count": 5}) is None
    assert routing.exact_sample(0, 0, (0.0, 0.0)) is None


def test_a_process_learns_from_one_answer_per_node_and_model_at_a_time() -> None:
    gate = routing.SampleGate()
    assert gate.due("m", "a", 100.0)
    assert not gate.due("m", "a", 100.0 + routing.LEARN_EVERY_S / 2)
    assert gate.due("m", "b", 100.001) and gate.due("other", "a", 100.001)
    assert gate.due("m", "a", 100.0 + routing.LEARN_EVERY_S)
