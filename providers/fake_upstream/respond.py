"""What a handler works with: FakeRequest (the parsed request, its label's Behaviour,
and the response helpers that apply body-level failures), plus the text helpers that
keep replies deterministic. The contract is described in core.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from aiohttp import web

from providers.fake_upstream import faults

if TYPE_CHECKING:
    from providers.fake_upstream.core import Behaviour, Route

MAX_HANG_SECONDS = 300.0
_AUTH_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")

# --- text helpers ----------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_CHUNK_RE = re.compile(r"\s*\S+")


def count_tokens(text: str) -> int:
    """Plausible token count: words and punctuation marks, at least 1."""
    return max(1, len(_TOKEN_RE.findall(text or "")))


def split_chunks(text: str) -> list[str]:
    """Stream pieces whose concatenation is exactly `text` (a word with its leading space)."""
    pieces = _CHUNK_RE.findall(text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    return pieces or [""]


def text_of(content: Any) -> str:
    """Text of a message content in any provider's shape (string, parts, blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text") or "")
    return ""


@dataclass(slots=True)
class Reply:
    """A generated reply: its stream pieces, the stop sequence that cut it (or None) and
    whether the token limit cut it (a limit wins over a stop sequence, as upstream)."""

    pieces: list[str]
    stop: str | None = None
    truncated: bool = False


def generate(text: str, stops: Any = None, limit: Any = None) -> Reply:
    """Cut `text` as a generation would end: at the earliest of `stops` (a string or a
    list of strings), then after `limit` pieces (one piece, one token) when `limit` is a
    positive int smaller than the reply."""
    stops = [stops] if isinstance(stops, str) else stops or []
    hits = [(text.index(s), s) for s in stops if isinstance(s, str) and s and s in text]
    stop = None
    if hits:
        at, stop = min(hits)
        text = text[:at]
    pieces = split_chunks(text)
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
        return Reply(pieces[:limit], None, True)
    return Reply(pieces, stop)


def last_text(items: Iterable[Any], role: str = "user", field: str = "content", default_role: str = "") -> str:
    """The text (text_of) of the last item whose `role` matches, or ""."""
    texts = [text_of(m.get(field)) for m in items if isinstance(m, dict) and m.get("role", default_role) == role]
    return texts[-1] if texts else ""


Handler = Callable[["FakeRequest"], Awaitable[web.StreamResponse]]


def checked(check: Callable[[FakeRequest], web.Response | None]) -> Callable[[Handler], Handler]:
    """Decorate a handler with the API's first checks (key, body): `check(req)` returns
    the error response to send instead, or None to run the handler."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(req: FakeRequest) -> web.StreamResponse:
            problem = check(req)
            return problem if problem is not None else await handler(req)

        return run

    return decorate


# --- the request object handed to handlers -----------------------------------------------


class FakeRequest:
    """A parsed request plus its label's Behaviour and the response helpers."""

    def __init__(self, http: web.Request, route: Route, label: str, behaviour: Behaviour, params, body, raw):
        self.http = http
        self.route = route
        self.label = label
        self.behaviour = behaviour
        self.params: dict[str, str] = params
        self.body: Any = body
        self.raw: bytes = raw
        self.failure: str | None = None  # a faults.BODY_FAILURES kind when one is injected

    @property
    def headers(self):
        return self.http.headers

    def reply_for(self, prompt: str) -> str:
        if self.behaviour.reply is not None:
            return self.behaviour.reply
        return f"Echo: {prompt.strip()[:400]}" if prompt.strip() else "Hello from the fake upstream."

    def counts(self, prompt: int, completion: int) -> tuple[Any, Any, Any]:
        """(prompt, completion, total) as the usage reports them: the real counts, or
        the behaviour's `token_counts` verbatim (total: their sum when both are numbers)."""
        if self.behaviour.token_counts is None:
            return prompt, completion, prompt + completion
        prompt, completion = self.behaviour.token_counts
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (prompt, completion))
        return prompt, completion, prompt + completion if numbers else prompt

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        """The provider-shaped error response (module.error_body)."""
        return error_response(self.route.module, status, message, headers)

    async def json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.StreamResponse:
        if self.failure == "stream_error":
            return self.error(500, DEFAULT_MESSAGES[500])
        if self.failure == "stream_echo_key":
            return self.error(500, echo_key_message(caller_key(self.http)))
        if self.failure == "missing_fields":
            obj = faults.without_fields(obj, self.route.module)
        elif self.failure == "no_end":  # a JSON body's only end is its last byte
            self.failure = "cut"
        data = json.dumps(obj, separators=(",", ":")).encode()
        if self.failure == "malformed":
            return web.Response(body=data[: max(1, len(data) // 2)], status=status, content_type="application/json")
        if self.failure in ("cut", "stall", "drip"):
            return await self._stream_bytes([data[: len(data) // 2], data[len(data) // 2 :]], "application/json")
        return web.Response(body=data, status=status, content_type="application/json", headers=headers)

    def damage(self, events: Iterable[tuple[str | None, Any]]) -> list[tuple[str | None, Any]]:
        """`events` as missing_fields or no_end leaves them (faults.damage), for handlers
        that frame a stream themselves."""
        return faults.damage(self.failure, events, self.route.module)

    async def sse(self, events: Iterable[tuple[str | None, Any]], headers: dict[str, str] | None = None):
        frames = []
        for name, data in self.damage(events):
            payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
            frames.append((f"event: {name}\n" if name else "") + f"data: {payload}\n\n")
        bad = 'data: {"broken": \n\n'
        return await self._stream_frames(frames, "text/event-stream; charset=utf-8", bad=bad, headers=headers)

    async def ndjson(self, objs: Iterable[Any], headers: dict[str, str] | None = None):
        objs = [data for _, data in self.damage((None, o) for o in objs)]
        frames = [json.dumps(o, separators=(",", ":")) + "\n" for o in objs]
        return await self._stream_frames(frames, "application/x-ndjson", bad='{"broken": \n', headers=headers)

    async def raw_stream(self, chunks: Iterable[bytes], content_type: str, headers: dict[str, str] | None = None):
        return await self._stream_frames(list(chunks), content_type, bad=b"\x00\x00\x00\x10garbage!", headers=headers)

    async def _stream_frames(self, frames: list, content_type: str, bad, headers=None) -> web.StreamResponse:
        encoded = [f.encode() if isinstance(f, str) else f for f in frames]
        bad = bad.encode() if isinstance(bad, str) else bad
        n = self.behaviour.cut_after
        if self.failure == "malformed":
            encoded = encoded[:n] + [bad] + encoded[n:]
        elif self.failure in ("stream_error", "stream_echo_key"):
            frame = getattr(self.route.module, "stream_error_frame", None)
            echo = [echo_key_message(caller_key(self.http))] if self.failure == "stream_echo_key" else []
            encoded = encoded[:n] + ([frame(*echo).encode()] if frame else [bad])
        return await self._stream_bytes(encoded, content_type, headers)

    async def _stream_bytes(self, chunks: list[bytes], content_type: str, headers=None) -> web.StreamResponse:
        b = self.behaviour
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = content_type.split(";")[0]
        if "charset" in content_type:
            resp.charset = "utf-8"
        await resp.prepare(self.http)
        if self.failure == "drip":
            for byte in b"".join(chunks):
                await resp.write(bytes([byte]))
                await asyncio.sleep(b.drip_ms / 1000)
        elif b.chunk_delay_ms or self.failure in ("cut", "stall"):
            for i, chunk in enumerate(chunks):
                if self.failure in ("cut", "stall") and i >= b.cut_after:
                    break
                await resp.write(chunk)
                if b.chunk_delay_ms:
                    await asyncio.sleep(b.chunk_delay_ms / 1000)
            if self.failure == "stall":
                await hang(self.http)
            if self.failure in ("cut", "stall"):
                drop(self.http)
                return resp
        else:
            await resp.write(b"".join(chunks))
        await resp.write_eof()
        return resp


def drop(http: web.Request) -> None:
    """Drop the connection without finishing the response (the client sees a broken body)."""
    if http.transport is not None:
        http.transport.abort()


async def hang(http: web.Request, limit: float = MAX_HANG_SECONDS) -> None:
    """Wait until the client closes the connection (or `limit` passes)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        transport = http.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.02)


DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Invalid authentication credentials.",
    403: "Permission denied.",
    404: "Not found.",
    429: "Rate limit reached for requests.",
    500: "The server had an error while processing your request.",
    503: "The service is temporarily unavailable.",
    529: "Overloaded.",
}


def error_response(module: ModuleType | None, status: int, message: str, headers=None) -> web.Response:
    body = module.error_body(status, message) if module and hasattr(module, "error_body") else {"error": message}
    return web.json_response(body, status=status, headers=headers)


def echo_key_message(key: str) -> str:
    return f"Incorrect API key provided: {key}. You can find your API key in your account."


def caller_key(http: web.Request) -> str:
    """The credential the caller sent, as it sent it (for the echo_key failure)."""
    for name in _AUTH_HEADERS:
        value = http.headers.get(name)
        if value:
            return value.split(" ", 1)[1] if value.lower().startswith("bearer ") else value
    return http.query.get("key", "")
