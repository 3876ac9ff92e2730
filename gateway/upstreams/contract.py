"""What the proxy needs of a node's protocol, whichever it is: a call bound to one node (the
path and body to send, how to read its answer, its errors and its stream) and, for streams,
a relay from the node's bytes to the client's SSE bytes. Implemented by `adapters` (the
calls), `ollama.NdjsonRelay` and `openai.SseRelay`."""

from __future__ import annotations

from typing import Protocol

from gateway.errors import GatewayError
from gateway.snapshot import NodeView


class StreamRelay(Protocol):
    """Turns upstream stream bytes into client SSE bytes, whatever the TCP chunking."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def failed(self) -> GatewayError | None: ...
    @property
    def streamed(self) -> int: ...  # events relayed so far, about a token each

    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class NodeCall(Protocol):
    """One request in one node's protocol."""

    @property
    def path(self) -> str: ...
    @property
    def body(self) -> bytes: ...

    def translate(self, raw: bytes) -> tuple[bytes, int | None, int | None]: ...
    def relay(self) -> StreamRelay: ...
    def error(self, status: int, raw: bytes) -> GatewayError: ...


class UpstreamCall(Protocol):
    """A validated client request that can be sent to any node serving its profile."""

    def for_node(self, node: NodeView) -> NodeCall: ...
