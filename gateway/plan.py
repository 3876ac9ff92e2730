"""Per-request policy decided before any node is contacted: the prompt estimate, the output
budget (clamped to the profile), and the context-window check. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import context_length_exceeded
from gateway.snapshot import ProfileView


@dataclass(frozen=True, slots=True)
class Plan:
    prompt_tokens: int  # estimate
    max_tokens: int | None  # what to send upstream; None for embeddings
    clamped: bool  # the client asked for more than the profile allows


def plan_generation(
    profile: ProfileView, prompt_tokens: int, requested: int | None, param: str = "messages"
) -> Plan:
    """Refuse what cannot fit instead of letting the node truncate it silently.

    The output budget is the client's max_tokens clamped to the profile's maximum; without
    one, whatever room the window leaves (capped the same way)."""
    window = profile.context_window
    limit = profile.max_output_tokens
    if requested is not None:
        budget = min(requested, limit)
        if prompt_tokens + budget > window:
            raise context_length_exceeded(window, prompt_tokens, budget, param)
        return Plan(prompt_tokens, budget, requested > limit)
    if prompt_tokens >= window:
        raise context_length_exceeded(window, prompt_tokens, 0, param)
    return Plan(prompt_tokens, min(limit, window - prompt_tokens), False)


def plan_embedding(profile: ProfileView, prompt_tokens: int, longest_input: int) -> Plan:
    if longest_input > profile.context_window:
        raise context_length_exceeded(profile.context_window, longest_input, 0, "input")
    return Plan(prompt_tokens, None, False)
