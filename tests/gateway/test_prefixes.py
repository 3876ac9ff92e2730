"""A conversation's prefix identity (gateway.prefixes): turn N+1 finds turn N, and nothing
shared by unrelated conversations is looked up."""

from __future__ import annotations

from gateway import prefixes
from gateway.tokens import estimate_chat_prompt_tokens, estimate_message_tokens

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 40}


def turn(history: list[dict[str, str]], question: str, answer: str | None = None) -> list:
    messages = [*history, {"role": "user", "content": question}]
    return messages if answer is None else [*messages, {"role": "assistant", "content": answer}]


def test_the_next_turn_looks_up_the_prompt_the_last_turn_recorded() -> None:
    first = turn([SYSTEM], "Why does my build fail? " * 200)
    recorded = prefixes.chat("qwen3:32b", first)
    second = turn([*first, {"role": "assistant", "content": "Because of X."}], "And now?")
    looked_up = prefixes.chat("qwen3:32b", second)
    identities = [identity for identity, _ in looked_up.lookups]
    assert recorded.record[0] in identities
    # Longest first: the whole prompt, then the prompt less its newest message, and so on.
    cached = [tokens for _, tokens in looked_up.lookups]
    assert cached == sorted(cached, reverse=True)
    hit = dict(looked_up.lookups)[recorded.record[0]]
    assert hit == estimate_chat_prompt_tokens(first)  # the first turn's prompt, as estimated


def test_a_system_prompt_shared_by_every_conversation_is_never_looked_up() -> None:
    one = prefixes.chat("m", turn([SYSTEM], "first conversation"))
    other = prefixes.chat("m", turn([SYSTEM], "second conversation"))
    assert not set(dict(one.lookups)) & set(dict(other.lookups))
    assert prefixes.chat("m", [SYSTEM]).lookups == ()


def test_key_order_does_not_matter_but_model_tools_and_content_do() -> None:
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user"}]
    assert prefixes.chat("m", a).record == prefixes.chat("m", b).record
    assert prefixes.chat("m", a).record != prefixes.chat("n", a).record
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert prefixes.chat("m", a).record != prefixes.chat("m", a, tools).record
    assert prefixes.chat("m", a).record != prefixes.chat("m", turn([], "hi!")).record


def test_a_session_header_is_looked_up_first_and_recorded() -> None:
    messages = turn([SYSTEM], "question " * 100)
    pinned = prefixes.chat("m", messages, session="s-1")
    assert len(pinned.record) == 2
    first, cached = pinned.lookups[0]
    assert first == pinned.record[1]
    # All but the newest message: the session's node holds the rest.
    assert cached == estimate_chat_prompt_tokens(messages) - estimate_message_tokens(messages[-1])
    assert prefixes.chat("m", messages, session="s-2").record[1] != first


def test_a_longer_text_prompt_matches_the_blocks_it_shares() -> None:
    document = "".join(f"line {i} of the document\n" for i in range(2000))
    first = prefixes.completion("m", document + "Q: one?")
    later = prefixes.completion("m", document + "Q: one?\nA: yes\nQ: two?")
    assert first.record[0] in dict(later.lookups)
    assert dict(later.lookups)[first.record[0]] == len(document) // 512 * 512 // 4
    assert prefixes.completion("m", "short").lookups == ()
    assert prefixes.completion("m", ["a" * 4000, "b"]) is prefixes.NONE


def test_lookups_are_bounded() -> None:
    history: list = []
    for i in range(60):
        history = turn(history, f"question {i}", f"answer {i}")
    assert len(prefixes.chat("m", history).lookups) <= prefixes.MAX_LOOKUPS
    assert len(prefixes.completion("m", "x" * 512 * 200).lookups) <= prefixes.MAX_LOOKUPS


def test_only_prompts_worth_caching_are_followed() -> None:
    assert not prefixes.worth_following(prefixes.MIN_TOKENS - 1, "")
    assert prefixes.worth_following(prefixes.MIN_TOKENS, "")
    assert prefixes.worth_following(1, "session-7")  # a named session is always followed
