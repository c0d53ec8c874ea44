"""Request bodies are bounded before they are read (axonflow_site/mount.py), on every
HTTP path: a declared Content-Length over AXONFLOW_MAX_BODY_BYTES is refused with 413
`payload_too_large` before authentication, a chunked body is cut off at the limit
without being spooled to disk; and JSON nesting is bounded (routing/api/parsers.py)."""

from __future__ import annotations

import io
import json
import select
import socket
import tempfile
import time

import pytest
from django.core.files import temp as django_temp

from axonflow_site.mount import mount
from routing.api.parsers import MAX_JSON_DEPTH, SafeJSONParser, nested_too_deeply
from routing.v1 import wire
from tests.conftest import make_token

MIB = 1024 * 1024
HUGE = 64 * MIB
PATHS = ["/v1/chat/completions", "/api/v1/providers/", "/api/v1/completions", "/login/", "/admin/login/"]


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def nested_list(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# --- the nesting scan -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, too_deep",
    [
        (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}', False),
        (nested_list(100), False),
        (deep(100), False),
        (nested_list(MAX_JSON_DEPTH), False),
        (nested_list(MAX_JSON_DEPTH + 1), True),
        (deep(MAX_JSON_DEPTH + 1), True),
        (nested_list(10_000), True),
        (b"[" * 10_000, True),  # unbalanced: refused as soon as it is too deep
        (b'["' + b"[" * 10_000 + b'"]', False),  # brackets inside a string do not count
        (b'["a\\"' + b"[" * 10_000 + b'"]', False),  # nor after an escaped quote
        (b'["a\\\\"' + b"[" * 10_000 + b"]" * 10_000 + b"]", True),  # an escaped backslash ends it
        (b"[" + b"[[]]," * 200 + b'{"a": [1, 2, 3]}]', False),  # wide, not deep
        (b'"' + b"[" * 200, False),  # unterminated: for the parser to refuse
    ],
)  # fmt: skip
def test_the_scan_measures_nesting_outside_strings(body, too_deep):
    assert nested_too_deeply(body) is too_deep


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200 + b'"' + b'\\"' * 400_000,  # one unterminated string full of escaped quotes
        b"[" * 129 + b"]" * 129 + b'"a",' * 200_000,  # many strings
        b"[" * 200_000 + b"]" * 200_000,
    ],
    ids=["escaped-quotes", "many-strings", "deep"],
)
def test_the_scan_is_quick_on_hostile_bodies(body):
    started = time.perf_counter()
    nested_too_deeply(body)
    assert time.perf_counter() - started < 0.5


def test_a_hundred_levels_parse_on_both_faces():
    assert SafeJSONParser().parse(io.BytesIO(deep(100)))["a"]["a"]
    assert wire.parse_body(deep(100))["a"]["a"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/completions", "/api/v1/providers/"])
def test_ten_thousand_levels_are_a_quick_400(gateway, acme, path):
    with gateway.client(make_token(acme)) as client:
        started = time.monotonic()
        r = client.post(path, content=deep(10_000), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["code"] == "validation_error" and "nested" in r.json()["error"]["message"]
    assert time.monotonic() - started < 1.0


# --- the ASGI limit, over real HTTP ------------------------------------------------------------------


def connect(gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def head(path: str, extra: str, token: str = "axf_not-a-token") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


@pytest.fixture
def no_temp_files(monkeypatch):
    """Records every temporary file created (a body spooled to disk would be one)."""
    created: list[str] = []
    real_temporary, real_named = tempfile.TemporaryFile, django_temp.NamedTemporaryFile

    def temporary(*args, **kwargs):
        created.append("TemporaryFile")
        return real_temporary(*args, **kwargs)

    def named(*args, **kwargs):
        created.append("NamedTemporaryFile")
        return real_named(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary)
    monkeypatch.setattr(django_temp, "NamedTemporaryFile", named)
    yield created
    assert created == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
def test_a_declared_64_mib_body_is_refused_before_a_byte_is_read(gateway, path, no_temp_files):
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(head(path, f"Content-Length: {HUGE}\r\n"))  # and not one byte of the body
        status, headers, body = read_response(sock)
    assert time.monotonic() - started < 2.0
    assert status == 413 and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and error["details"] == {"limit_bytes": 1_048_576}
    assert ("type" in error) == path.startswith("/v1/")  # OpenAI's shape on /v1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_64_mib_body_is_cut_off_at_the_limit(gateway, acme, path, no_temp_files):
    # A valid token: /v1 authenticates before it reads a body (a stranger gets 401 unread).
    token = make_token(acme)
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with connect(gateway) as sock:
        sock.sendall(head(path, "Transfer-Encoding: chunked\r\n", token))
        sock.setblocking(False)
        while sent < HUGE:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break  # the answer came: stop sending
            assert writable, "the server neither read nor answered"
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        status, _headers, body = read_response(sock)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert sent < 16 * MIB  # the server stopped reading near the 1 MiB limit, not at 64 MiB


@pytest.mark.django_db(transaction=True)
def test_bodies_within_the_limit_still_reach_the_console(gateway):
    with gateway.client() as client:
        r = client.post("/login/", data={"username": "x", "password": "y" * 1000})
    assert r.status_code in (200, 403)  # the form, or CSRF refusing it: not 413


async def test_a_content_length_that_is_not_a_number_is_400():
    sent: list[dict] = []

    async def django_app(scope, receive, send):
        raise AssertionError("nothing is read or served")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/api/v1/providers/", "method": "POST", "headers": [(b"content-length", b"12x")]}
    await mount(django_app)(scope, None, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "validation_error"


async def test_the_limit_is_read_at_request_time(settings):
    settings.AXONFLOW_MAX_BODY_BYTES = 10
    sent: list[dict] = []

    async def app(scope, receive, send):
        raise AssertionError("refused before")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/x/", "method": "POST", "headers": [(b"content-length", b"11")]}
    await mount(app)(scope, None, send)
    assert sent[0]["status"] == 413


@pytest.mark.parametrize("value, message", [("abc", "AXONFLOW_MAX_BODY_BYTES"), ("0", "at least 1024")])
def test_a_bad_limit_fails_at_import(value, message):
    from tests.test_settings import load_settings

    result = load_settings(DEBUG="true", AXONFLOW_MAX_BODY_BYTES=value)
    assert result.returncode != 0 and message in result.stderr
