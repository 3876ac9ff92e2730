"""What a finished request used, against what was estimated before it ran. Pure functions."""

from __future__ import annotations

# Below this estimate a prompt is too short to judge: counts and estimates differ by more
# than the ratio on a few tokens of chat template.
MIN_JUDGED_PROMPT = 32


def prompt_truncated(counted: int | None, estimate: int, ratio: float) -> bool:
    """A node's prompt count far below our estimate means it cut the prompt silently (Ollama
    does at num_ctx). A count the node left out is unknown, not zero (Ollama omits it for
    some cached prompts: PROTOCOLS.md)."""
    if counted is None or estimate < MIN_JUDGED_PROMPT:
        return False
    return counted < estimate * ratio


def token_correction(
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    prompt_estimate: int,
    reserved: int,
) -> int:
    """What to add to the key's tokens-per-minute window: the reservation made at admission
    (prompt estimate plus requested output) corrected to what was used. Nothing when the
    node counted nothing; a prompt count it never sent stays the estimate."""
    if prompt_tokens is None and completion_tokens is None:
        return 0
    prompt = prompt_tokens if prompt_tokens is not None else prompt_estimate
    return prompt + (completion_tokens or 0) - reserved
