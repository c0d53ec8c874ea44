"""providers/adapters/http.py against a hostile upstream (an aiohttp.web server in the
test, on 127.0.0.1): an over-long stream line and an oversized JSON body are retryable
MalformedResponses with a short message, a huge error body is still a ProviderError with
a short message, and none of them makes the client read the whole body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import test_utils, web

from providers import registry
from providers.adapters import http
from providers.adapters.base import CompletionRequest, MalformedResponse, Message, ProviderError
from tests.fixtures_upstream import collect, make_config

pytestmark = pytest.mark.usefixtures("http_session")

KEY = "sk-test-http-limits-0123456789abcdef"
CHUNK = b"x" * 65536
ENDLESS = 64 * 1024 * 1024  # what a hostile upstream offers to send; never read whole
SHORT = 200  # a message fit for a client, a probe or the board (http.MESSAGE_CHARS + a prefix)
DONE_EVENT = b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[]}\n\ndata: [DONE]\n\n'


class Hostile:
    """An aiohttp.web server whose every request is answered by `status`, `headers`
    and `head` followed by `size` bytes of "x" (then `tail`), written as the client reads
    them; `sent` is how many bytes the client took before it hung up."""

    def __init__(self, status: int = 200, head: bytes = b"", size: int = ENDLESS, tail: bytes = b"", **headers: str):
        self.status, self.head, self.size, self.tail, self.headers = status, head, size, tail, headers
        self.sent = 0
        self.finished = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = test_utils.TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=self.status, headers=self.headers)
        try:
            await response.prepare(request)
            await response.write(self.head)
            while self.sent < self.size:
                piece = CHUNK[: self.size - self.sent]
                await response.write(piece)
                self.sent += len(piece)
            await response.write(self.tail)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should have
        finally:
            self.finished.set()
        return response

    def url(self, path: str = "/v1") -> str:
        return str(self.server.make_url(path))

    async def proves_the_client_hung_up(self) -> bool:
        await asyncio.wait_for(self.finished.wait(), 10)
        return self.sent < self.size


@pytest.fixture
async def hostile_server():
    started: list[Hostile] = []

    async def start(**fields) -> Hostile:
        started.append(Hostile(**fields))
        await started[-1].server.start_server()
        return started[-1]

    yield start
    for hostile in started:
        await hostile.server.close()


def call() -> http.Call:
    return http.Call("hostile", http.Clocks.for_timeout(10))


async def raised(action: Callable[[], Awaitable[object]]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await action()
    return caught.value


def assert_short(error: ProviderError) -> None:
    assert len(error.message) <= SHORT
    assert "xxxxxxxxxx" not in error.message  # what the upstream sent never travels on


# --- streams ----------------------------------------------------------------------------


async def test_an_sse_line_over_the_line_limit_is_a_retryable_malformed_response(hostile_server):
    hostile = await hostile_server(head=b"data: ", size=http.MAX_LINE_BYTES + 1024, tail=b"\n\n" + DONE_EVENT)
    adapter = registry.build(make_config("openai", hostile.url(), KEY, name="hostile", timeout_seconds=10))

    error = await raised(lambda: collect(adapter.stream(CompletionRequest([Message("user", "Hi")]))))

    assert isinstance(error, MalformedResponse) and error.retryable
    assert error.message == "stream line over 512 KiB"
    assert_short(error)


async def test_an_endless_line_is_not_read_to_its_end(hostile_server):
    hostile = await hostile_server(head=b"data: ")
    c = call()
    response = await c.open("GET", hostile.url(), {})

    error = await raised(lambda: collect(c.lines(response)))

    assert isinstance(error, MalformedResponse) and error.retryable
    assert_short(error)
    assert await hostile.proves_the_client_hung_up()


async def test_lines_within_the_limit_still_stream(hostile_server):
    hostile = await hostile_server(head=b"data: ", size=http.MAX_LINE_BYTES // 2, tail=b"\n\n")
    c = call()

    lines = await collect(c.lines(await c.open("GET", hostile.url(), {})))

    assert [len(line) for line in lines] == [len("data: ") + http.MAX_LINE_BYTES // 2, 0]


# --- JSON bodies --------------------------------------------------------------------------


def test_the_limits_are_32_mib_of_json_64_kib_of_error_and_512_kib_a_line():
    assert http.MAX_RESPONSE_BYTES == 32 * 1024 * 1024
    assert http.MAX_ERROR_BODY_BYTES == 64 * 1024
    assert http.MAX_LINE_BYTES == 512 * 1024


async def test_a_json_body_over_the_limit_is_a_retryable_malformed_response(hostile_server, monkeypatch):
    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 256 * 1024)
    hostile = await hostile_server(head=b'{"padding": "', tail=b'"}', **{"Content-Type": "application/json"})

    error = await raised(lambda: call().request_json("POST", hostile.url(), {}, json_body={}))

    assert isinstance(error, MalformedResponse) and error.retryable and error.status_code == 200
    assert error.message == "response body over 256 KiB"
    assert_short(error)
    assert await hostile.proves_the_client_hung_up()


async def test_a_content_length_over_the_limit_is_refused_unread(hostile_server, monkeypatch):
    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 256 * 1024)
    size = 4 * 1024 * 1024
    hostile = await hostile_server(size=size, **{"Content-Type": "application/json", "Content-Length": str(size)})

    error = await raised(lambda: call().request_json("POST", hostile.url(), {}, json_body={}))

    assert isinstance(error, MalformedResponse) and error.retryable
    assert await hostile.proves_the_client_hung_up()


async def test_a_json_body_at_the_limit_is_read(hostile_server, monkeypatch):
    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 256 * 1024)
    padding = 256 * 1024 - len(b'{"padding": ""}')
    hostile = await hostile_server(head=b'{"padding": "', size=padding, tail=b'"}')

    body = await call().request_json("POST", hostile.url(), {}, json_body={})

    assert len(body["padding"]) == padding


# --- error bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (400, False)])
async def test_a_huge_error_body_is_a_provider_error_with_a_short_message(hostile_server, status, retryable):
    hostile = await hostile_server(status=status, head=b'{"error": {"message": "upstream exploded", "padding": "')

    error = await raised(lambda: call().request_json("POST", hostile.url(), {}, json_body={}))

    assert error.status_code == status and error.retryable is retryable
    assert error.message.startswith('{"error": {"message": "upstream exploded"')
    assert len(error.message) <= SHORT
    assert await hostile.proves_the_client_hung_up()


async def test_an_error_body_that_fits_keeps_its_message(hostile_server):
    body = b'{"error": {"message": "model overloaded", "type": "server_error"}}'
    hostile = await hostile_server(status=503, head=body, size=0)

    error = await raised(lambda: call().request_json("POST", hostile.url(), {}, json_body={}))

    assert (error.status_code, error.message, error.retryable) == (503, "model overloaded", True)
