"""The one pooled aiohttp session per process (per event loop), the four clocks of an
attempt, the line decoders for SSE and NDJSON streams, and BaseProvider, the plumbing
every adapter class shares (base.py stays a leaf of types and errors).

Clocks: `connect` (TCP/TLS), `first_byte` (until response headers, or the first chunk
of a stream), `idle` (between reads of a stream) and `total` (the config's
timeout_seconds). A socket read timeout is per read, so a server dripping one byte at a
time never trips it; the total deadline is enforced separately with asyncio timeouts,
for streams too.

Egress (SPEC §6): the session's connector checks every address it is about to dial with
providers.egress, whether the host is an IP literal, a fresh DNS answer or a cached one,
and dials only checked addresses, so a name that resolved to a public address when the
config was saved cannot rebind to the metadata service or a private one later. Redirects
are never followed and proxy environment variables are ignored.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import orjson
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.http_exceptions import HttpProcessingError

from axonflow_site.errors import InvalidConfig
from axonflow_site.tracing import with_traceparent
from providers import egress, secrets
from providers.adapters.base import (
    CHAT,
    STREAMING,
    Capabilities,
    CompletionRequest,
    CompletionResponse,
    CostEstimate,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthProbe,
    MalformedResponse,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    classify,
    require_list,
    timed_probe,
)
from providers.pricing import estimate_cost

if TYPE_CHECKING:
    from providers.models import ProviderConfig

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
# Answers used as they are (no further getaddrinfo by the connector), as aiohttp's own resolvers mark them.
NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
# Redirects are refused, not followed: the Location could name any address.
REDIRECT_MESSAGE = "redirects are not followed"
# What one upstream answer may make the server hold: a whole JSON body (Call.read_json),
# and the start of an error body, which is all error_for needs (the message is cut to
# MESSAGE_CHARS anyway). A stream is read a line or a chunk at a time, and aiohttp refuses
# a line longer than twice the session's read buffer (the buffer's high-water mark).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
READ_BUFFER_BYTES = 256 * 1024  # aiohttp 3.14's default read_bufsize, set so the line limit is known
MAX_LINE_BYTES = 2 * READ_BUFFER_BYTES
# What aiohttp raises for bytes it will not frame: LineTooLong (an HttpProcessingError) for a
# line over its limit, or, in older aiohttp, ValueError("Chunk too big") from readuntil.
UNFRAMEABLE = (HttpProcessingError, ValueError)


class EgressResolver(AbstractResolver):
    """DNS for the provider session: egress.lookup (getaddrinfo) in a thread, every
    answer checked by egress.check_address. Raises egress.EgressRefused when any answer
    is refused, so a refused address never reaches the connector's DNS cache."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        answers = await loop.run_in_executor(None, egress.lookup, host, port, family, socket.AI_ADDRCONFIG)
        results = []
        for answer_family, address, answer_port in answers:
            egress.check_address(address)
            results.append(
                ResolveResult(
                    hostname=host, host=address, port=answer_port, family=answer_family, proto=0, flags=NUMERIC_FLAGS
                )
            )
        if not results:
            raise OSError(f"{host} has no address")
        return results

    async def close(self) -> None:
        return None


class EgressConnector(aiohttp.TCPConnector):
    """aiohttp's connector, checking every address it will dial.

    `_resolve_host` is where the connector turns a host into the addresses it connects
    to: IP literals (which never reach the resolver), fresh answers and cached ones
    (ttl_dns_cache) alike, so checking its result means the setting in force now
    decides, and the checked address is the one dialled. aiohttp itself refuses
    non-canonical IPv4 spellings (`127.1`); they are classified first, so the error
    names what they spell."""

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        literal = egress.parse_address(host)
        if literal is not None:
            egress.check_address(str(literal))
            if literal.version == 4:
                host = str(literal)
        results = await super()._resolve_host(host, port, traces=traces)
        for result in results:
            egress.check_address(result["host"])
        return results


# The override above is the connect-time guard: fail at import, not silently, if aiohttp renames it.
assert callable(getattr(aiohttp.TCPConnector, "_resolve_host", None)), "aiohttp.TCPConnector._resolve_host is gone"


def get_session() -> aiohttp.ClientSession:
    """The process's pooled session for the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        for other in [lp for lp in _sessions if lp.is_closed()]:
            _sessions.pop(other, None)
        connector = EgressConnector(
            resolver=EgressResolver(), limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
        )
        # trust_env=False: proxy variables are ignored on the provider path.
        session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=READ_BUFFER_BYTES,
            json_serialize=_json_text,  # orjson: a tenth of json.dumps's time for every request body
        )
        _sessions[loop] = session
    return session


async def close_session() -> None:
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


@dataclass(frozen=True, slots=True)
class Clocks:
    connect: float
    first_byte: float
    idle: float
    total: float

    @classmethod
    def for_timeout(cls, total: float, options: Mapping[str, Any] | None = None) -> Clocks:
        """The clocks for a `total` deadline; `options` (config.settings) may set the
        other three (CLOCK_SETTINGS). Raises InvalidConfig for a bad value."""
        options = options or {}
        connect, first_byte, idle = (clock_setting(options, name) for name in CLOCK_SETTINGS)
        return cls(
            connect=float(min(10.0, total)) if connect is None else connect,
            first_byte=float(total) if first_byte is None else first_byte,
            idle=float(min(30.0, total)) if idle is None else idle,
            total=float(total),
        )

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect, sock_read=self.idle)


# Settings every adapter takes (the total deadline, timeout_seconds, caps them all).
CLOCK_SETTINGS = ("connect_timeout", "first_byte_timeout", "idle_timeout")
MAX_CLOCK_SECONDS = 600  # the longest timeout_seconds a provider may have


def clock_setting(options: Mapping[str, Any], name: str) -> float | None:
    """options[name] in seconds, None when absent. Raises InvalidConfig naming the
    setting unless it is a number above 0 and at most MAX_CLOCK_SECONDS (so never a
    string, a bool, NaN or infinity)."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_CLOCK_SECONDS:
        raise InvalidConfig(
            f"settings.{name} must be a number of seconds above 0 and at most {MAX_CLOCK_SECONDS}.",
            {"field": "settings", "setting": name},
        )
    return float(value)


def check_setting_names(raw: Mapping[str, Any], known: Collection[str]) -> None:
    """What every Settings.parse does first: raise InvalidConfig for a key that is
    neither in `known` nor a clock setting, or for a bad clock value. `factory` is the
    registry's (a custom provider built by a registered factory, whatever its class);
    providers/registry.py refuses it on other types."""
    unknown = sorted(
        str(name) for name in raw if name not in known and name not in CLOCK_SETTINGS and name != "factory"
    )
    if unknown:
        allowed = ", ".join(sorted({*known, *CLOCK_SETTINGS}))
        raise InvalidConfig(
            f"settings.{unknown[0][:100]} is not a setting of this provider type (known: {allowed}).",
            {"field": "settings", "setting": unknown[0][:100]},
        )
    for name in CLOCK_SETTINGS:
        clock_setting(raw, name)


# With the "HTTP 503: " a probe puts in front, a probe's error stays within 200 characters.
MESSAGE_CHARS = 180


def summary(text: str) -> str:
    """`text` as one short line (whitespace runs collapsed, at most MESSAGE_CHARS): what
    an upstream said travels to clients, probes and the board, never what it echoed."""
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def error_message(body: bytes) -> str:
    """The human message from an error body in any of the providers' shapes, as one
    short line (see summary). Scrubbed before it is shortened, so that the cut cannot
    leave part of a key that secrets.scrub would no longer recognise."""
    text = secrets.scrub(body[:4000].decode("utf-8", "replace"))
    try:
        data = json.loads(text)
    except ValueError:
        return summary(text)
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return summary(str(err.get("message") or err.get("type") or err))
        if isinstance(err, str):
            return summary(err)
        if "message" in data or "Message" in data:
            return summary(str(data.get("message") or data.get("Message")))
    return summary(text)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(raw: str | bytes) -> Any:
    """JSON from an upstream: orjson (a third of json.loads's time), else what Python's
    json also accepts (NaN, Infinity, integers past 64 bits, which Python-built servers
    send). Raises ValueError when neither can read it."""
    try:
        return orjson.loads(raw)
    except ValueError:
        return json.loads(raw)


@functools.lru_cache(maxsize=4096)  # a provider's URLs repeat: parse each once, not per request
def url_problem(url: str) -> str | None:
    """Why no provider request may use `url` (not http(s), or carrying credentials, which
    aiohttp would send as Basic auth), or None. The host is checked by the connector
    (EgressConnector), where it is resolved."""
    try:
        parsed = yarl.URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        return "invalid base URL: only http:// and https:// URLs are dialled"
    if parsed.user is not None or parsed.password is not None:
        return "invalid base URL: credentials in the URL are never sent"
    return None


class Call:
    """One attempt against one upstream: opens the request under the clocks and
    maps every transport failure to the ProviderError tree."""

    def __init__(self, provider: str, clocks: Clocks):
        self.provider = provider
        self.clocks = clocks
        self.deadline = time.monotonic() + clocks.total

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _timeout(self, limit: float) -> asyncio.Timeout:
        loop = asyncio.get_running_loop()
        return asyncio.timeout_at(loop.time() + max(0.0, min(limit, self.remaining())))

    async def open(
        self, method: str, url: str, headers: Mapping[str, str], json_body: Any = None, data: bytes | None = None
    ) -> aiohttp.ClientResponse:
        """Send the request and return the response once its headers arrive.

        Non-2xx responses are read (their first MAX_ERROR_BODY_BYTES) and raised as
        classified ProviderErrors."""
        problem = url_problem(url)
        if problem:
            raise ProviderConnectError(self.provider, problem)
        session = get_session()
        try:
            async with self._timeout(self.clocks.first_byte):
                response = await session.request(
                    method,
                    url,
                    headers=with_traceparent(headers),  # the attempt's span, when tracing
                    json=json_body,
                    data=data,
                    timeout=self.clocks.client_timeout(),
                    allow_redirects=False,
                )
                if 300 <= response.status < 400:
                    response.release()
                    # A misconfigured provider, not a bad request: another provider may answer.
                    raise ProviderError(self.provider, response.status, REDIRECT_MESSAGE, retryable=True)
                if response.status >= 400:
                    try:
                        body, _ = await read_at_most(response, MAX_ERROR_BODY_BYTES)
                    finally:
                        response.release()  # closes the connection when the rest is unread
                    raise self.error_for(response.status, body, response.headers)
                return response
        except ProviderError:
            raise
        except egress.EgressRefused as exc:
            raise ProviderConnectError(self.provider, exc.message) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as exc:
            # A URL or header aiohttp will not send (a config that skipped validation): the
            # provider's fault, never a 500.
            raise ProviderConnectError(self.provider, f"invalid request: {type(exc).__name__}") from None
        except TimeoutError:
            raise ProviderTimeout(self.provider, "timed out waiting for the upstream's response") from None
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
            raise ProviderConnectError(self.provider, f"cannot connect: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise ProviderConnectError(self.provider, f"transport error: {type(exc).__name__}") from None

    def error_for(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Hook for provider quirks; the default reads the common error shapes."""
        return classify(self.provider, status, error_message(body), headers)

    async def read_json(self, response: aiohttp.ClientResponse) -> Any:
        """The whole body as JSON, within the total deadline. Raises ProviderTimeout,
        ProviderConnectError, or MalformedResponse for a body that is not JSON or is over
        MAX_RESPONSE_BYTES (refused unread when its Content-Length says so)."""
        length = response.content_length
        body, cut = b"", (length or 0) > MAX_RESPONSE_BYTES
        try:
            if not cut:
                async with self._timeout(self.clocks.total):
                    if length is not None:  # bounded by the header checked above: one read
                        body = await response.read()
                    else:
                        body, cut = await read_at_most(response, MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise ProviderTimeout(self.provider, "timed out reading the upstream's response") from None
        except aiohttp.ClientError as exc:
            raise ProviderConnectError(self.provider, f"connection lost: {type(exc).__name__}") from None
        except UNFRAMEABLE:
            raise MalformedResponse(self.provider, "unreadable response body", response.status) from None
        finally:
            response.release()
        if cut:
            raise MalformedResponse(self.provider, f"response body over {size(MAX_RESPONSE_BYTES)}", response.status)
        try:
            return loads(body)
        except ValueError:
            raise MalformedResponse(self.provider, "upstream returned invalid JSON", response.status) from None

    async def request_json(
        self, method: str, url: str, headers: Mapping[str, str], json_body: Any = None, data: bytes | None = None
    ) -> Any:
        response = await self.open(method, url, headers, json_body=json_body, data=data)
        return await self.read_json(response)

    async def lines(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the body's lines (without line endings) under the idle and total clocks.
        Raises ProviderError (see _next); a line over MAX_LINE_BYTES is a MalformedResponse."""
        try:
            while True:
                line = await self._next(response.content.readline, f"stream line over {size(MAX_LINE_BYTES)}")
                if not line:
                    return
                yield line.rstrip(b"\r\n")
        finally:
            response.release()

    async def raw_chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield raw body chunks (binary framings such as AWS event streams) under the
        clocks. Raises ProviderError (see _next)."""
        try:
            while True:
                chunk = await self._next(response.content.readany, "unreadable stream")
                if not chunk:
                    return
                yield chunk
        finally:
            response.release()

    async def _next(self, read: Callable[[], Awaitable[bytes]], unframeable: str) -> bytes:
        """One read of a streamed body under the idle clock. Raises ProviderTimeout when
        it stalls (idle or total), ProviderConnectError when the connection breaks, and a
        MalformedResponse saying `unframeable` for bytes aiohttp will not frame (UNFRAMEABLE)."""
        # Which clock binds is decided before the wait: asyncio may fire a timeout up to
        # its clock resolution early, so remaining() read afterwards can still be a hair
        # above 0 and misname a total-deadline stop as an idle one.
        by_total = self.remaining() <= self.clocks.idle
        try:
            async with self._timeout(self.clocks.idle):
                return await read()
        except TimeoutError:
            which = "total deadline" if by_total else "idle timeout"
            raise ProviderTimeout(self.provider, f"stream stalled ({which})") from None
        except aiohttp.ClientError as exc:
            raise ProviderConnectError(self.provider, f"stream broken: {type(exc).__name__}") from None
        except UNFRAMEABLE:
            raise MalformedResponse(self.provider, unframeable) from None


def size(count: int) -> str:
    """`count` bytes in KiB or MiB, for messages."""
    return f"{count // 2**20} MiB" if count >= 2**20 else f"{count // 2**10} KiB"


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """(the body's first `limit` bytes, whether there was more): reads `limit` + 1 bytes
    at most. The caller applies the clocks and releases the response."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:limit], size > limit


async def sse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """Decode Server-Sent Events into (event, data) pairs; event defaults to "message".

    Multi-line data fields are joined with newlines, comments (":") are skipped, per
    the HTML living standard's event-stream parsing rules.
    """
    event, data = "", []
    async for raw in lines:
        line = raw.decode("utf-8", "replace")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event or "message", "\n".join(data)


def json_object(raw: str | bytes, provider: str, what: str = "stream event") -> dict:
    """`raw` decoded as a JSON object; MalformedResponse naming `what` otherwise."""
    try:
        obj = loads(raw)
    except ValueError:
        raise MalformedResponse(provider, f"{what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise MalformedResponse(provider, f"{what} is not a JSON object")
    return obj


async def ndjson(lines: AsyncIterator[bytes], provider: str) -> AsyncIterator[dict]:
    """Decode newline-delimited JSON objects; a bad line is a MalformedResponse."""
    async for raw in lines:
        if raw.strip():
            yield json_object(raw, provider, "stream line")


# --- the adapter base ---------------------------------------------------------------------


class BaseProvider:
    """Shared plumbing for adapters built from a ProviderConfig.

    Subclasses set `type` and implement complete/stream/health_check. The key is
    resolved lazily (and cached by providers.secrets), so building is cheap. A
    `settings_class` (a dataclass with `parse(raw)` raising InvalidConfig) is parsed
    from `config.settings` into `self.settings` at build time; `call_class` is the
    http.Call subclass reading the provider's error shape (http.Call when None).
    """

    type = ""
    supports_streaming = True
    # What this wire API can do (chat.py names); each adapter lists its own (custom may
    # narrow it per instance from its settings).
    features: frozenset[str] = frozenset({CHAT, STREAMING})
    settings_class: ClassVar[Any] = None
    call_class: ClassVar[type[Call] | None] = None

    def __init__(self, config: ProviderConfig):
        self.config = config
        self.name = config.name
        self.model = config.model
        self.timeout = float(config.timeout_seconds or 30)
        self.options: Mapping[str, Any] = config.settings or {}
        self.settings = self.settings_class.parse(self.options) if self.settings_class else None
        self._clocks: Clocks | None = None  # parsed at the first call (a bad setting fails that call)

    def base_url_or(self, default: str | None) -> str:
        """config.base_url, else `default`, without a trailing slash.

        Raises InvalidConfig when neither is set."""
        base_url = self.config.base_url or default
        if not base_url:
            raise InvalidConfig(f"Provider '{self.name}' needs a base_url.", {"field": "base_url"})
        return base_url.rstrip("/")

    def _call(self) -> Call:
        """A new attempt under this config's four clocks (http.Clocks.for_timeout)."""
        clocks = self._clocks
        if clocks is None:
            clocks = self._clocks = Clocks.for_timeout(self.timeout, self.options)
        return (self.call_class or Call)(self.name, clocks)

    async def post_json(
        self,
        url: str,
        headers: Mapping[str, str],
        body: Any,
        parse: Callable[[Any, str], CompletionResponse],
        model: str,
    ) -> CompletionResponse:
        """POST `body` as JSON and return `parse(answer, self.name)`, naming `model` when
        the upstream's answer names none. Raises ProviderError (from the call or parse)."""
        data = await self._call().request_json("POST", url, headers, json_body=body)
        response = parse(data, self.name)
        response.model = response.model or model
        return response

    async def open_lines(self, url: str, headers: Mapping[str, str], body: Any) -> AsyncIterator[bytes]:
        """POST `body` and return the streamed answer's lines (http.Call.lines) once the
        headers are in. Raises ProviderError for a refused or failed request."""
        call = self._call()
        response = await call.open("POST", url, headers, json_body=body)
        return call.lines(response)

    async def probe_list(
        self, url: str, headers: Mapping[str, str], key: str, message: str, *, optional: bool = False
    ) -> HealthProbe:
        """The timed probe of a GET listing (models, tags): ok when the answer is an
        object holding a list under `key` (see require_list)."""

        async def check() -> None:
            require_list(
                await self._call().request_json("GET", url, headers), key, self.name, message, optional=optional
            )

        return await timed_probe(check)

    @property
    def api_key(self) -> str:
        """The resolved key. A key that cannot be had (a refused or missing reference,
        a key the encryption keys cannot open) fails this provider like an upstream
        error would: retryable, so the router fails over."""
        try:
            return secrets.resolve_api_key(self.config)
        except InvalidConfig as exc:
            raise ProviderError(self.name, None, exc.message, retryable=True) from None

    def model_for(self, request: CompletionRequest) -> str:
        return request.model or self.model

    def capabilities(self) -> Capabilities:
        features = self.features if self.supports_streaming else self.features - {STREAMING}
        return Capabilities(streaming=self.supports_streaming, features=features)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Adapters that declare EMBEDDINGS override this; the router never calls it
        on one that does not."""
        raise ProviderError(self.name, None, f"{self.type} providers cannot embed", retryable=False)

    def estimate_cost(self, request: CompletionRequest) -> CostEstimate:
        return estimate_cost(self.config, request)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
