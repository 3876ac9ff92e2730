from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.validation import validate_chat, validate_completion, validate_embedding


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "qwen3", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return body


def reject(validate: Any, body: object) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        validate(body)
    error = caught.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


def test_minimal_chat_gets_openai_defaults() -> None:
    body = chat()
    req = validate_chat(body)
    assert req.model == "qwen3"
    assert req.stream is False and req.include_usage is False
    assert req.max_tokens is None and req.max_tokens_field is None
    assert req.tools is None and req.tool_choice is None and req.response_format is None
    assert req.sampling.temperature is None and req.sampling.stop is None
    assert req.raw is body and req.messages is body["messages"]


def test_full_chat_is_read_into_typed_fields() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = validate_chat(
        chat(
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=10,
            max_completion_tokens=20,
            temperature=0,
            top_p=0.5,
            seed=7,
            stop="END",
            presence_penalty=1,
            frequency_penalty=-1.5,
            tools=tools,
            tool_choice="auto",
            response_format={"type": "json_object"},
            reasoning_effort="low",
            logprobs=True,
            top_logprobs=3,
            n=1,
            top_k=40,
            min_p=0.05,
        )
    )
    assert req.stream and req.include_usage
    # max_completion_tokens is the current name and wins over the deprecated one.
    assert (req.max_tokens, req.max_tokens_field) == (20, "max_completion_tokens")
    s = req.sampling
    assert (s.temperature, s.top_p, s.seed, s.stop) == (0.0, 0.5, 7, ("END",))
    assert (s.presence_penalty, s.frequency_penalty, s.top_k, s.min_p) == (1.0, -1.5, 40, 0.05)
    assert req.tools == tools and req.tool_choice == "auto"
    assert req.reasoning_effort == "low" and req.logprobs and req.top_logprobs == 3


def test_legacy_max_tokens_is_used_when_alone() -> None:
    req = validate_chat(chat(max_tokens=5))
    assert (req.max_tokens, req.max_tokens_field) == (5, "max_tokens")


def test_nulls_mean_absent() -> None:
    req = validate_chat(
        chat(stream=None, max_tokens=None, temperature=None, stop=None, tools=None, n=None)
    )
    assert req.stream is False and req.max_tokens is None and req.tools is None


@pytest.mark.parametrize("body", [None, [], "text", 3, True])
def test_body_must_be_an_object(body: object) -> None:
    error = reject(validate_chat, body)
    assert error.param is None
    assert "JSON object" in error.message


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"model": None}, "model", "must provide a model"),
        ({"model": ""}, "model", "must not be empty"),
        ({"model": "  "}, "model", "must not be empty"),
        ({"model": 3}, "model", "expected a string"),
        ({"messages": None}, "messages", "Missing required parameter"),
        ({"messages": "hi"}, "messages", "expected an array"),
        ({"messages": []}, "messages", "at least one message"),
        ({"messages": ["hi"]}, "messages[0]", "expected an object"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "Missing required"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role", "'function'"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "Missing required"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "Missing"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "integer"),
        ({"messages": [{"role": "user", "content": {}}]}, "messages[0].content", "object"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content", "not be empty"),
        (
            {"messages": [{"role": "user", "content": ["hi"]}]},
            "messages[0].content[0]",
            "expected an object",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
            "'audio'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
            "expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]},
            "messages[0].content[0].image_url",
            "expected an object",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
            "non-empty string",
        ),
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
            "system message",
        ),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content", "Missing required"),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": []}]},
            "messages[0].content",
            "Missing required",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": {}}]},
            "messages[0].tool_calls",
            "expected an array",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},
                ]
            },
            "messages[0].tool_calls[0].id",
            "expected a string",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}],
                    },
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "JSON string",
        ),
        (
            {"messages": [{"role": "tool", "content": "42"}]},
            "messages[0].tool_call_id",
            "expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "name": 1}]},
            "messages[0].name",
            "expected a string",
        ),
        ({"n": 2}, "n", "Only n=1"),
        ({"n": 0}, "n", "minimum of 1"),
        ({"n": True}, "n", "expected an integer"),
        ({"stream": "yes"}, "stream", "expected a boolean"),
        ({"stream": 1}, "stream", "expected a boolean"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed"),
        ({"stream": True, "stream_options": []}, "stream_options", "expected an object"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
            "expected a boolean",
        ),
        ({"max_tokens": 0}, "max_tokens", "minimum of 1"),
        ({"max_tokens": -5}, "max_tokens", "minimum of 1"),
        ({"max_tokens": True}, "max_tokens", "got boolean"),
        ({"max_tokens": 1.5}, "max_tokens", "got number"),
        ({"max_tokens": "10"}, "max_tokens", "got string"),
        ({"max_completion_tokens": False}, "max_completion_tokens", "got boolean"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "minimum of 1"),
        ({"temperature": 2.5}, "temperature", "range 0 to 2"),
        ({"temperature": -0.1}, "temperature", "range 0 to 2"),
        ({"temperature": "hot"}, "temperature", "expected a number"),
        ({"temperature": True}, "temperature", "expected a number"),
        ({"top_p": 1.5}, "top_p", "range 0 to 1"),
        ({"presence_penalty": 3}, "presence_penalty", "range -2 to 2"),
        ({"frequency_penalty": "x"}, "frequency_penalty", "expected a number"),
        ({"seed": 1.5}, "seed", "expected an integer"),
        ({"seed": True}, "seed", "expected an integer"),
        ({"stop": 5}, "stop", "string or an array"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stop": ["a", 1]}, "stop[1]", "expected a string"),
        ({"tools": {}}, "tools", "expected an array"),
        ({"tools": ["f"]}, "tools[0]", "expected an object"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "'function'"),
        ({"tools": [{"type": "function"}]}, "tools[0].function", "expected an object"),
        (
            {"tools": [{"type": "function", "function": {"name": ""}}]},
            "tools[0].function.name",
            "non-empty string",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
            "expected an object",
        ),
        ({"tool_choice": "always"}, "tool_choice", "'always'"),
        ({"tool_choice": {"type": "function"}}, "tool_choice", "named tool choice"),
        ({"tool_choice": 1}, "tool_choice", "string or an object"),
        ({"response_format": "json"}, "response_format", "expected an object"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "'xml'"),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "expected an object",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
            "JSON Schema object",
        ),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "'extreme'"),
        ({"logprobs": "yes"}, "logprobs", "expected a boolean"),
        ({"top_logprobs": 3}, "top_logprobs", "'logprobs' must be true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "maximum of 20"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls", "expected a boolean"),
    ],
)
def test_chat_validation_errors(fields: dict[str, Any], param: str, fragment: str) -> None:
    error = reject(validate_chat, chat(**fields))
    assert error.param == param
    assert fragment in error.message
    assert param.split("[")[0].split(".")[0] in error.message


def test_the_first_bad_message_is_named() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text"}]},
    ]
    error = reject(validate_chat, chat(messages=messages))
    assert error.param == "messages[2].content[1].text"


def test_every_valid_message_shape_is_accepted() -> None:
    messages = [
        {"role": "developer", "content": "rules"},
        {"role": "system", "content": [{"type": "text", "text": "more rules"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "", "name": "bob"},
    ]
    assert validate_chat(chat(messages=messages)).messages == messages


def test_tool_choice_required_and_named_pass_validation() -> None:
    # Refusing them is the Ollama translation's job: a vLLM node may support both.
    assert validate_chat(chat(tool_choice="required")).tool_choice == "required"
    named = {"type": "function", "function": {"name": "f"}}
    assert validate_chat(chat(tool_choice=named)).tool_choice == named


def test_json_schema_response_format_is_kept() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert validate_chat(chat(response_format=fmt)).response_format == fmt


def test_empty_stop_list_means_no_stop() -> None:
    assert validate_chat(chat(stop=[])).sampling.stop is None
    assert validate_chat(chat(stop=["a", "b"])).sampling.stop == ("a", "b")


# --- completions ---


def completion(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "qwen3", "prompt": "Once upon"}
    body.update(fields)
    return body


def test_completion_fields() -> None:
    req = validate_completion(
        completion(
            suffix="end",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            stop=["\n"],
            echo=False,
            temperature=1,
        )
    )
    assert req.prompt == "Once upon" and req.suffix == "end" and req.max_tokens == 8
    assert req.stream and req.include_usage and not req.echo and req.logprobs is None
    assert req.sampling.stop == ("\n",) and req.sampling.temperature == 1.0


def test_completion_prompt_may_be_empty_or_a_list() -> None:
    assert validate_completion(completion(prompt="")).prompt == ""
    assert validate_completion(completion(prompt=["a", "b"])).prompt == ["a", "b"]


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"prompt": None}, "prompt", "Missing required parameter"),
        ({"prompt": 5}, "prompt", "string or an array"),
        ({"prompt": []}, "prompt", "must not be empty"),
        ({"prompt": [1, 2, 3]}, "prompt", "Token arrays are not supported"),
        ({"prompt": [[1, 2]]}, "prompt", "Token arrays are not supported"),
        ({"prompt": ["a", None]}, "prompt[1]", "expected a string"),
        ({"suffix": 1}, "suffix", "expected a string"),
        ({"n": 3}, "n", "Only n=1"),
        ({"best_of": 2}, "best_of", "Only best_of=1"),
        ({"max_tokens": True}, "max_tokens", "got boolean"),
        ({"echo": 1}, "echo", "expected a boolean"),
        ({"logprobs": 6}, "logprobs", "maximum of 5"),
        ({"stream_options": {}}, "stream_options", "only allowed"),
        ({"model": ""}, "model", "must not be empty"),
    ],
)
def test_completion_validation_errors(fields: dict[str, Any], param: str, fragment: str) -> None:
    error = reject(validate_completion, completion(**fields))
    assert error.param == param
    assert fragment in error.message


def test_completion_body_must_be_an_object() -> None:
    assert reject(validate_completion, ["prompt"]).param is None


# --- embeddings ---


def test_embedding_fields() -> None:
    req = validate_embedding({"model": "e", "input": ["a", "b"], "dimensions": 8})
    assert req.input == ["a", "b"] and req.dimensions == 8 and req.encoding_format == "float"
    req = validate_embedding({"model": "e", "input": "a", "encoding_format": "base64"})
    assert req.input == "a" and req.encoding_format == "base64" and req.dimensions is None


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"input": None}, "input", "Missing required parameter"),
        ({"input": ""}, "input", "must not be an empty string"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["a", ""]}, "input[1]", "must not be an empty string"),
        ({"input": [1, 2]}, "input", "Token arrays are not supported"),
        ({"input": {"text": "a"}}, "input", "string or an array"),
        ({"encoding_format": "int8"}, "encoding_format", "'int8'"),
        ({"dimensions": 0}, "dimensions", "minimum of 1"),
        ({"dimensions": True}, "dimensions", "expected an integer"),
        ({"model": None}, "model", "must provide a model"),
    ],
)
def test_embedding_validation_errors(fields: dict[str, Any], param: str, fragment: str) -> None:
    body: dict[str, Any] = {"model": "e", "input": "hello"}
    body.update(fields)
    error = reject(validate_embedding, body)
    assert error.param == param
    assert fragment in error.message


def test_embedding_body_must_be_an_object() -> None:
    assert reject(validate_embedding, "hello").param is None
