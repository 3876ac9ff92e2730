"""What a finished request used against its estimate."""

from __future__ import annotations

from gateway.accounting import prompt_truncated, token_correction


def test_a_count_far_below_the_estimate_is_a_truncated_prompt() -> None:
    assert prompt_truncated(100, 1000, 0.5)
    assert not prompt_truncated(600, 1000, 0.5)


def test_a_missing_count_or_a_short_prompt_is_not_judged() -> None:
    assert not prompt_truncated(None, 1000, 0.5)
    assert not prompt_truncated(1, 31, 0.5)


def test_the_reservation_is_corrected_to_what_was_used() -> None:
    assert (
        token_correction(prompt_tokens=90, completion_tokens=10, prompt_estimate=100, reserved=150)
        == -50
    )


def test_a_prompt_count_the_node_never_sent_stays_the_estimate() -> None:
    assert (
        token_correction(
            prompt_tokens=None, completion_tokens=30, prompt_estimate=100, reserved=150
        )
        == -20
    )


def test_nothing_counted_corrects_nothing() -> None:
    assert (
        token_correction(
            prompt_tokens=None, completion_tokens=None, prompt_estimate=100, reserved=150
        )
        == 0
    )
