"""The answer side of /v1/messages (routing/v1/messages.py): the Message body, the stream
of server-sent events, and errors in Anthropic's envelope. Pure functions, no I/O.

- Message: https://docs.anthropic.com/en/api/messages (Message in
  ../shared/provider-specs/served/anthropic.json).
- Streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming: `message_start`
  (empty content), per block `content_block_start`, `content_block_delta` (`text_delta`, or
  `input_json_delta` with `partial_json` for tool_use) and `content_block_stop`, indexes
  sequential from 0; then `message_delta` (stop_reason, stop_sequence, cumulative usage)
  and `message_stop`. Errors after the 200 are an `event: error`. anthropic-python
  assembles events in anthropic/lib/streaming/_messages.py `accumulate_event` and raises
  APIStatusError for an `error` event (anthropic/_streaming.py).
- Errors: https://docs.anthropic.com/en/api/errors: `{"type": "error", "error": {"type",
  "message"}, "request_id"}`; 400 invalid_request_error, 401 authentication_error, 403
  permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
  api_error, 529 overloaded_error. The SDKs pick the exception class by HTTP status.

Choices:
- The answer's `model` is the model that answered (Anthropic too answers with the snapshot
  it served), or the name asked for when the provider gave none.
- stop_reason: stop -> end_turn (a provider's "stop" does not say which stop sequence
  matched, so `stop_sequence` is always null), length -> max_tokens, tool_calls ->
  tool_use, content_filter -> refusal; "stop" or none with tool calls is tool_use (some
  providers report a plain stop for function calls, and SDK loops test for tool_use).
- usage: our prompt tokens already include cached input (adapters fold cache reads and
  writes in), so `input_tokens` is the whole input and the cache counts are 0.
"""

from __future__ import annotations

from typing import Any

from axonflow_site.errors import AxonFlowError
from providers.adapters.base import Chunk, CompletionResponse
from routing.v1.wire import dumps

# Our error codes (axonflow_site/errors.py, routing/v1/app.py) as Anthropic error types.
ERROR_TYPES = {
    "validation_error": "invalid_request_error",
    "invalid_config": "invalid_request_error",
    "duplicate_provider": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "payload_too_large": "request_too_large",
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "license_required": "permission_error",
    "provider_not_found": "not_found_error",
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "upstream_error": "api_error",
    "internal_error": "api_error",
    "no_healthy_provider": "overloaded_error",
}
# Normalized (OpenAI) finish reasons as Anthropic stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def stop_reason(finish_reason: str | None, called_tools: bool) -> str:
    """Anthropic's stop_reason for a normalized finish reason."""
    if called_tools and finish_reason in (None, "stop", "tool_calls"):
        return "tool_use"
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def usage_dict(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Message.usage with every field the spec lists; cached input is in input_tokens."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "inference_geo": None,
        "server_tool_use": None,
        "service_tier": None,
    }


def _message(request_id: str, model: str, content: list, stop: str | None, usage: dict) -> dict[str, Any]:
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage,
    }


def _tool_id(call_id: str | None, request_id: str, n: int) -> str:
    return call_id or f"toolu_{request_id}_{n}"


def message_body(response: CompletionResponse, request_id: str, model_asked: str) -> bytes:
    """The Message for a complete answer: a text block (when there is text), then one
    tool_use block per tool call, its arguments as an object."""
    content: list[dict[str, Any]] = []
    if response.content:
        content.append({"type": "text", "text": response.content, "citations": None})
    calls = response.tool_calls or []
    for n, call in enumerate(calls):
        block_id = _tool_id(call.id, request_id, n)
        content.append({"type": "tool_use", "id": block_id, "name": call.name, "input": call.input(),
                        "caller": {"type": "direct"}})  # fmt: skip
    usage = usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens)
    stop = stop_reason(response.finish_reason, bool(calls))
    return dumps(_message(request_id, response.model or model_asked, content, stop, usage))


def sse(event: str, body: dict[str, Any]) -> bytes:
    """One server-sent event: its name, and the JSON data whose `type` repeats it."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(body) + b"\n\n"


PING_EVENT = sse("ping", {"type": "ping"})  # a keep-alive the SDKs skip


class MessageStream:
    """Chunks in, Anthropic's stream events out, as bytes.

    `start()` gives message_start (the first `events()` sends it if not yet sent),
    `events(chunk)` one chunk's block events, `finish()` closes the open block and gives
    message_delta and message_stop. One block is open at a time: text opens a text block,
    each new ToolCallDelta.index a tool_use block fed by input_json_delta events. Providers
    stream one tool call's pieces contiguously (as OpenAI does); a fragment for a closed
    block cannot be sent and raises ValueError."""

    def __init__(self, request_id: str, model: str, input_tokens: int = 0):
        self.request_id = request_id
        self.model = model
        self.input_tokens = input_tokens
        self.started = False
        self.finished = False
        self.open: str | None = None  # the open block's type: "text", "tool_use" or None
        self.blocks = 0  # blocks started so far: the open one is blocks - 1
        self.tools: dict[int, int] = {}  # ToolCallDelta.index -> its block's index
        self.finish_reason: str | None = None
        self.output_tokens: int | None = None

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        message = _message(self.request_id, self.model, [], None, usage_dict(self.input_tokens, 0))
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.open = kind
        self.blocks += 1
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.blocks - 1,
                                                 "content_block": block})  # fmt: skip

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def events(self, chunk: Chunk) -> bytes:
        if self.finished:
            raise RuntimeError("the stream is finished")
        if not self.started and chunk.model:
            self.model = chunk.model
        out = [self.start()]
        if chunk.delta:
            if self.open != "text":
                out.append(self._open("text", {"type": "text", "text": ""}))
            out.append(self._delta(self.blocks - 1, {"type": "text_delta", "text": chunk.delta}))
        for piece in chunk.tool_calls or ():
            index = self.tools.get(piece.index)
            if index is None:
                block_id = _tool_id(piece.id, self.request_id, len(self.tools))
                out.append(self._open("tool_use", {"type": "tool_use", "id": block_id, "name": piece.name or "",
                                                   "input": {}}))  # fmt: skip
                index = self.tools[piece.index] = self.blocks - 1
            elif index != self.blocks - 1 or self.open != "tool_use":
                raise ValueError(f"a fragment of tool call {piece.index} arrived after its block was closed")
            if piece.arguments:
                out.append(self._delta(index, {"type": "input_json_delta", "partial_json": piece.arguments}))
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        return b"".join(out)

    def finish(self) -> bytes:
        if self.finished:
            return b""
        out = self.start() + self._close()
        self.finished = True
        usage: dict[str, int] = {"output_tokens": self.output_tokens or 0}
        if self.output_tokens is not None:  # cumulative: the SDK replaces message_start's count
            usage["input_tokens"] = self.input_tokens
        delta = {"stop_reason": stop_reason(self.finish_reason, bool(self.tools)), "stop_sequence": None}
        out += sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + sse("message_stop", {"type": "message_stop"})


# --- errors --------------------------------------------------------------------------------


def error_type(error: AxonFlowError) -> str:
    """Anthropic's error type for one of our errors (by code, else by HTTP status)."""
    kind = ERROR_TYPES.get(error.code)
    if kind is None:
        kind = "api_error" if error.http_status >= 500 else "invalid_request_error"
    return kind


def _envelope(error: AxonFlowError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error), "message": error.message}}


def error_body(error: AxonFlowError, request_id: str | None = None) -> bytes:
    """Anthropic's error envelope; the HTTP status stays the error's own."""
    return dumps({**_envelope(error), "request_id": request_id})


def error_event(error: AxonFlowError) -> bytes:
    """An error after the 200: `event: error`, as Anthropic sends overloaded_error mid-stream."""
    return sse("error", _envelope(error))
