"""The one pooled aiohttp session per process (per event loop), the four clocks of an
attempt, and the line decoders for SSE and NDJSON streams.

Clocks: `connect` (TCP/TLS), `first_byte` (until response headers, or the first chunk
of a stream), `idle` (between reads of a stream) and `total` (the config's
timeout_seconds). A socket read timeout is per read, so a server dripping one byte at a
time never trips it; the total deadline is enforced separately with asyncio timeouts,
for streams too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from providers.adapters.base import MalformedResponse, ProviderConnectError, ProviderError, ProviderTimeout, classify

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def get_session() -> aiohttp.ClientSession:
    """The process's pooled session for the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        for other in [lp for lp in _sessions if lp.is_closed()]:
            _sessions.pop(other, None)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
        # trust_env=False: proxy variables are ignored on the provider path.
        session = aiohttp.ClientSession(connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=None))
        _sessions[loop] = session
    return session


async def close_session() -> None:
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


@dataclass(slots=True)
class Clocks:
    connect: float
    first_byte: float
    idle: float
    total: float

    @classmethod
    def for_timeout(cls, total: float, options: Mapping[str, Any] | None = None) -> Clocks:
        options = options or {}
        return cls(
            connect=float(options.get("connect_timeout", min(10.0, total))),
            first_byte=float(options.get("first_byte_timeout", total)),
            idle=float(options.get("idle_timeout", min(30.0, total))),
            total=float(total),
        )

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect, sock_read=self.idle)


def error_message(body: bytes) -> str:
    """The human message from an error body in any of the providers' shapes."""
    text = body[:4000].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)[:500]
        if isinstance(err, str):
            return err[:500]
        if "message" in data or "Message" in data:
            return str(data.get("message") or data.get("Message"))[:500]
    return text.strip()[:500]


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

        Non-2xx responses are read and raised as classified ProviderErrors."""
        session = get_session()
        try:
            async with self._timeout(self.clocks.first_byte):
                response = await session.request(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    data=data,
                    timeout=self.clocks.client_timeout(),
                    allow_redirects=False,
                )
                if response.status >= 300:
                    body = await response.read()
                    response.release()
                    raise self.error_for(response.status, body, response.headers)
                return response
        except ProviderError:
            raise
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
        """The whole body as JSON, within the total deadline."""
        try:
            async with self._timeout(self.clocks.total):
                body = await response.read()
        except TimeoutError:
            raise ProviderTimeout(self.provider, "timed out reading the upstream's response") from None
        except aiohttp.ClientError as exc:
            raise ProviderConnectError(self.provider, f"connection lost: {type(exc).__name__}") from None
        finally:
            response.release()
        try:
            return json.loads(body)
        except ValueError:
            raise MalformedResponse(self.provider, "upstream returned invalid JSON", response.status) from None

    async def request_json(
        self, method: str, url: str, headers: Mapping[str, str], json_body: Any = None, data: bytes | None = None
    ) -> Any:
        response = await self.open(method, url, headers, json_body=json_body, data=data)
        return await self.read_json(response)

    async def lines(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the body's lines (without line endings) under the idle and total clocks."""
        try:
            while True:
                try:
                    async with self._timeout(self.clocks.idle):
                        line = await response.content.readline()
                except TimeoutError:
                    which = "total deadline" if self.remaining() <= 0 else "idle timeout"
                    raise ProviderTimeout(self.provider, f"stream stalled ({which})") from None
                except aiohttp.ClientError as exc:
                    raise ProviderConnectError(self.provider, f"stream broken: {type(exc).__name__}") from None
                if not line:
                    return
                yield line.rstrip(b"\r\n")
        finally:
            response.release()

    async def raw_chunks(self, response: aiohttp.ClientResponse, size: int = 65536) -> AsyncIterator[bytes]:
        """Yield raw body chunks (binary framings such as AWS event streams) under the clocks."""
        try:
            while True:
                try:
                    async with self._timeout(self.clocks.idle):
                        chunk = await response.content.readany()
                except TimeoutError:
                    which = "total deadline" if self.remaining() <= 0 else "idle timeout"
                    raise ProviderTimeout(self.provider, f"stream stalled ({which})") from None
                except aiohttp.ClientError as exc:
                    raise ProviderConnectError(self.provider, f"stream broken: {type(exc).__name__}") from None
                if not chunk:
                    return
                yield chunk
        finally:
            response.release()


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
        obj = json.loads(raw)
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
