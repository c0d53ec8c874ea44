"""The fake upstream's core: one aiohttp.web application that speaks every provider's
wire format, with per-label behaviour (latency, failures) and a request recorder.

Why aiohttp.web and not Django: the fake must never be the bottleneck of a benchmark
(several thousand requests/s on one core), so dispatch is one catch-all route, a list
of compiled suffix patterns, and no middleware.

Labels
------
Routing is by path *suffix*: whatever precedes a route's suffix is the request's
label, which selects its Behaviour. With base_url ``http://127.0.0.1:PORT/prov-a/v1``
an OpenAI client posts ``/prov-a/v1/chat/completions``: route suffix
``/v1/chat/completions``, label ``prov-a``. ``/v1/chat/completions`` has label ``""``.
Labels without their own Behaviour use the server's defaults.

Handler contract (for wire modules)
-----------------------------------
A wire module (``openai.py``, ``anthropic.py``, ``ollama.py``, ``gemini.py``,
``bedrock.py``) exposes::

    BASE_PATH = "/v1"                  # appended to http://host:port[/label] by base_url()
    ROUTES = [Route("POST", "/v1/chat/completions", chat, kind="chat"),
              Route("GET", "/v1/models", models, kind="probe"), ...]
    def error_body(status: int, message: str) -> dict   # the provider's error shape
    REQUIRED_FIELDS = frozenset({"choices", "data"})  # what "missing_fields" drops
    def is_end(event: str | None, data) -> bool         # the stream's end marker, for "no_end"

``Route.pattern`` is a plain suffix string or a compiled ``re.Pattern`` matched as a
suffix (its named groups land in ``req.params``). ``kind`` names the counter
(``chat`` for generation, ``probe`` for what health checks call). ``header``, when
set, makes the route match only requests carrying that header (OpenAI and Anthropic
both serve ``GET /v1/models``; Anthropic's needs ``anthropic-version``).

A handler is ``async def handler(req: FakeRequest) -> web.StreamResponse``. Before it
runs, the core has recorded the request, counted it, slept ``latency_ms`` and decided
on failure injection. Failures that need no wire knowledge are answered centrally:
HTTP statuses (``"500"``, ``"502"``, ``"503"``, ``"429"`` + Retry-After, ``"400"``,
``"401"``, ``"529"``…: any status from 300 to 599, body from the module's ``error_body``),
``"timeout"`` (hang until the client leaves), ``"reset"`` (the request is read, then the
connection is closed with a TCP reset and no response: the client sees a disconnect),
``"echo_key"`` (401 whose message repeats the caller's key, as OpenAI's "Incorrect
API key provided: sk-…" does, after ``error_message`` when set; the key is also sent
back in an ``X-Echoed-Key`` header) and ``"echo_request"`` (500 whose message is
``error_message`` followed by the whole request: method, path, every header, the
body), which tests/test_no_leaks.py uses to prove no key escapes. The body-level kinds are left in ``req.failure`` and
applied by the response helpers, so handlers just describe the happy path:

    ``await req.json(obj)``              JSON; malformed -> truncated body, cut -> drop mid-body
    ``await req.sse(events)``            events = [(event_name | None, dict | str), ...]
    ``await req.ndjson(objs)``           one JSON object per line
    ``await req.raw_stream(chunks, ct)`` pre-framed bytes (e.g. AWS event-stream)

Body-level kinds: ``"malformed"`` (invalid JSON / a bad stream line), ``"cut"`` (the
connection drops after ``cut_after`` chunks), ``"stall"`` (``cut_after`` chunks, then
silence until the client leaves: the idle clock), ``"drip"`` (every byte
``drip_ms`` apart: the total deadline) and ``"stream_error"`` (``cut_after`` events,
then the module's ``stream_error_frame()`` -- an in-band error event, as Anthropic
sends ``event: error`` -- and a clean end; a non-stream request gets a 500) and
``"stream_echo_key"`` (the same, with the caller's key in the error's message),
``"missing_fields"`` (a 200 whose JSON is well-formed but lacks the module's
``REQUIRED_FIELDS``, the top-level keys a client needs: OpenAI ``choices``/``data``,
Anthropic ``content``, Ollama ``message``, Gemini ``candidates``, Bedrock ``output``,
the embeddings' vectors; in a stream every event loses them) and ``"no_end"`` (a stream
that sends every event except those the module's ``is_end`` calls its end marker, then
closes cleanly: OpenAI's ``data: [DONE]``, Anthropic's ``message_stop``, Ollama's
``"done": true`` line, Gemini's chunk carrying ``finishReason``, Bedrock's
``messageStop`` and ``metadata``; a JSON body is cut off as with ``"cut"``). A handler
whose framing the generic helpers cannot break faithfully may look at ``req.failure``
itself (Bedrock's binary event stream applies ``req.damage(events)`` before framing).
faults.py holds the kinds and these wire-independent pieces.

Mixed faults: ``failure_kinds`` (a list of the kinds above) makes each failing request
draw its kind at random from the list (the server's seeded rng, so a run is
repeatable), instead of ``failure_kind``: ``configure("a", failure_rate=0.5,
failure_kinds=["500", "429", "malformed", "reset"])``.

``req.reply_for(prompt)`` gives the reply text (``behaviour.reply`` or an echo),
``split_chunks(text)`` the stream pieces (joined they equal the text) and
``count_tokens(text)`` a plausible token count.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import Any

from aiohttp import web

from providers.fake_upstream import faults
from providers.fake_upstream.faults import BODY_FAILURES, CENTRAL_FAILURES
from providers.fake_upstream.respond import (  # re-exported: wire modules import them from here
    DEFAULT_MESSAGES,
    FakeRequest,
    caller_key,
    checked,
    count_tokens,
    drop,
    echo_key_message,
    error_response,
    generate,
    hang,
    last_text,
    split_chunks,
    text_of,
)

WIRE_MODULES = ("openai", "anthropic", "ollama", "gemini", "bedrock")
ROUTE_KINDS = ("", "chat", "embeddings", "probe")  # Route.kind values ("" in failure_scope: all)
MAX_RECORDED = 5000
CONTROL_PREFIX = "/_control"
DEFAULT_LABEL_ALIAS = "-"  # /_control/-  addresses the "" label
DEFAULTS_ALIAS = "*"  # /_control/*  sets the defaults for every label


@dataclass(slots=True)
class Behaviour:
    """How a label's routes behave. Every field is optional in configure()/control JSON."""

    latency_ms: float = 0.0  # before the first byte
    failure_rate: float = 0.0  # 0..1, drawn per request
    failure_kind: str = "500"  # "<status>", CENTRAL_FAILURES or BODY_FAILURES
    failure_kinds: list | None = None  # several kinds: each failing request draws one (failure_kind unused)
    fail_next: int = 0  # the next N requests fail with failure_kind, deterministically
    failure_scope: str = ""  # "" = every route; or a route kind (ROUTE_KINDS)
    reply: str | None = None  # fixed reply text; None = echo the last user message
    chunk_delay_ms: float = 0.0  # between stream chunks
    cut_after: int = 2  # chunks sent before cut/stall/malformed strike
    drip_ms: float = 100.0  # between bytes for "drip"
    retry_after: str = "1"  # Retry-After header value on 429
    error_message: str = ""  # overrides the default message of HTTP failures
    require_auth: bool = True  # False: accept requests without a key (local vLLM, Ollama)
    # [prompt, completion] reported as the usage instead of the real counts, verbatim (any
    # JSON value: -5, "many", 1e30): upstream data is untrusted (tests/test_untrusted_usage.py)
    token_counts: list | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Behaviour | None = None) -> Behaviour:
        """A Behaviour from `base` updated with `data`. Raises ValueError on unknown or bad fields."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        merged = {**asdict(base or cls()), **data}
        b = cls(**merged)
        b.validate()
        return b

    def validate(self) -> None:
        if not 0.0 <= float(self.failure_rate) <= 1.0:
            raise ValueError("failure_rate must be within 0..1")
        kind = faults.check_kind(str(self.failure_kind))
        if self.failure_kinds is not None:
            if not isinstance(self.failure_kinds, list) or not self.failure_kinds:
                raise ValueError("failure_kinds must be a non-empty list of failure kinds, or null")
            self.failure_kinds = [faults.check_kind(str(k)) for k in self.failure_kinds]
        if self.failure_scope not in ROUTE_KINDS:
            # A misspelt scope would silently turn the failures off.
            raise ValueError(f"failure_scope must be one of {ROUTE_KINDS}")
        if self.latency_ms < 0 or self.chunk_delay_ms < 0 or self.drip_ms < 0 or self.fail_next < 0:
            raise ValueError("delays and fail_next must not be negative")
        if self.token_counts is not None and (not isinstance(self.token_counts, list) or len(self.token_counts) != 2):
            raise ValueError("token_counts must be [prompt, completion] or null")
        self.failure_kind = kind
        self.retry_after = str(self.retry_after)


@dataclass(slots=True)
class Recorded:
    """One request as the fake saw it (header names lower-cased)."""

    label: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, or None
    raw: bytes
    kind: str
    at: float = field(default_factory=time.time)
    closed_at: float | None = None  # when the client closed the connection before the answer ended

    def as_dict(self) -> dict[str, Any]:
        keys = ("label", "method", "path", "query", "headers", "body", "kind", "at", "closed_at")
        d = {k: getattr(self, k) for k in keys}
        if self.body is None and self.raw:
            d["raw"] = self.raw.decode("utf-8", "replace")
        return d


@dataclass(slots=True)
class Route:
    method: str
    pattern: str | re.Pattern[str]
    handler: Callable[[FakeRequest], Awaitable[web.StreamResponse]]
    kind: str = "chat"
    header: str | None = None
    module: ModuleType | None = None
    regex: re.Pattern[str] | None = None

    def compile(self) -> None:
        suffix = self.pattern.pattern if isinstance(self.pattern, re.Pattern) else re.escape(self.pattern)
        self.regex = re.compile(r"(?P<_label>.*?)" + suffix)

    def match(self, method: str, path: str, headers) -> re.Match[str] | None:
        if method != self.method or (self.header and self.header not in headers):
            return None
        return self.regex.fullmatch(path)


# --- state and dispatch ------------------------------------------------------------------


class State:
    """Behaviours, recorder and counters. Thread-safe for the in-process test harness."""

    def __init__(self, defaults: Behaviour | None = None):
        self.base = defaults or Behaviour()
        self.defaults = Behaviour.from_dict({}, self.base)
        self.behaviours: dict[str, Behaviour] = {}
        self.recorded: deque[Recorded] = deque(maxlen=MAX_RECORDED)
        self.counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.lock = threading.Lock()
        self.rng = random.Random(0)

    def behaviour(self, label: str) -> Behaviour:
        return self.behaviours.get(label) or self.defaults

    def configure(self, label: str, data: dict[str, Any]) -> Behaviour:
        """Replace `label`'s behaviour with the defaults updated by `data` ("*" = the defaults)."""
        if label == DEFAULTS_ALIAS:
            self.defaults = Behaviour.from_dict(data, self.base)
            return self.defaults
        b = Behaviour.from_dict(data, self.defaults)
        with self.lock:
            self.behaviours[label] = b
        return b

    def reset(self) -> None:
        with self.lock:
            self.behaviours.clear()
            self.recorded.clear()
            self.counts.clear()
            self.defaults = Behaviour.from_dict({}, self.base)
            self.rng.seed(0)

    def record(self, rec: Recorded, failed: bool) -> None:
        with self.lock:
            self.recorded.append(rec)
            c = self.counts[rec.label]
            c[rec.kind] += 1
            c["total"] += 1
            if failed:
                c["failed"] += 1

    def requests(self, label: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.recorded if label is None or r.label == label]

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {label: dict(c) for label, c in self.counts.items()}

    def should_fail(self, b: Behaviour, kind: str) -> bool:
        if b.failure_scope and b.failure_scope != kind:
            return False
        if b.fail_next > 0:
            b.fail_next -= 1
            return True
        return b.failure_rate > 0 and self.rng.random() < b.failure_rate


def load_routes() -> list[Route]:
    """Routes of every importable wire module; header-specific routes first."""
    import importlib

    routes: list[Route] = []
    for name in WIRE_MODULES:
        try:
            module = importlib.import_module(f"providers.fake_upstream.{name}")
        except ImportError:
            continue
        for route in module.ROUTES:
            route.module = module
            route.compile()
            routes.append(route)
    routes.sort(key=lambda r: r.header is None)
    return routes


def wire_module(provider_type: str) -> ModuleType:
    import importlib

    name = "openai" if provider_type == "custom" else provider_type
    return importlib.import_module(f"providers.fake_upstream.{name}")


async def dispatch(http: web.Request) -> web.StreamResponse:
    app = http.app
    state: State = app[STATE]
    path = http.path
    if path.startswith(CONTROL_PREFIX):
        from providers.fake_upstream.control import control

        return await control(http, state)
    for route in app[ROUTES]:
        m = route.match(http.method, path, http.headers)
        if m:
            break
    else:
        return web.json_response({"error": f"the fake upstream has no route for {http.method} {path}"}, status=404)
    params = m.groupdict()
    label = params.pop("_label").strip("/")
    raw = await http.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    b = state.behaviour(label)
    failing = state.should_fail(b, route.kind)
    headers = {k.lower(): v for k, v in http.headers.items()}
    recorded = Recorded(label, http.method, path, dict(http.query), headers, body, raw, route.kind)
    state.record(recorded, failing)
    try:
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        req = FakeRequest(http, route, label, b, params, body, raw)
        if failing:
            answer = await inject(req, b)
            if answer is not None:
                return answer
        return await route.handler(req)
    except asyncio.CancelledError:
        # The servers run with handler_cancellation: the client (the gateway) went away.
        recorded.closed_at = time.time()
        raise


async def inject(req: FakeRequest, b: Behaviour) -> web.StreamResponse | None:
    """Answer a central failure, or mark a body-level one on `req` and return None."""
    kind = req.http.app[STATE].rng.choice(b.failure_kinds) if b.failure_kinds else b.failure_kind
    if kind in BODY_FAILURES:
        req.failure = kind
        return None
    if kind == "timeout":
        await hang(req.http)
        drop(req.http)
        return web.Response(status=504)
    if kind == "reset":
        faults.reset(req.http)
        return web.Response(status=502)  # never sent: the connection is gone
    if kind == "echo_key":
        key = caller_key(req.http)
        return req.error(401, b.error_message + echo_key_message(key), {"X-Echoed-Key": key})
    if kind == "echo_request":
        http = req.http
        lines = [f"{http.method} {http.path_qs}", *(f"{k}: {v}" for k, v in http.headers.items()), ""]
        dump = "\n".join(lines) + req.raw.decode("utf-8", "replace")
        return req.error(500, f"{b.error_message}Could not process this request:\n{dump}")
    status = int(kind)
    headers = {"Retry-After": b.retry_after} if status == 429 else None
    return req.error(status, b.error_message or DEFAULT_MESSAGES.get(status, f"HTTP {status}"), headers)


STATE = web.AppKey("state", State)
ROUTES = web.AppKey("routes", list)


def make_app(defaults: Behaviour | None = None) -> web.Application:
    """The fake upstream application. `defaults` apply to every label without its own behaviour."""
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[STATE] = State(defaults)
    app[ROUTES] = load_routes()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


__all__ = [
    "BODY_FAILURES", "CENTRAL_FAILURES", "DEFAULT_MESSAGES", "Behaviour", "FakeRequest", "Recorded", "Route",
    "State", "caller_key", "checked", "count_tokens", "drop", "error_response", "generate", "hang", "last_text",
    "make_app", "split_chunks", "text_of", "wire_module",
]  # fmt: skip
