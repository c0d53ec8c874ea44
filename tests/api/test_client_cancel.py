"""A client that leaves cancels the upstream call at once, on every surface, streaming or
not: the fake upstream sees its connection closed within 100 ms of the client's, and
the usage record says client_cancelled (issue 12, Must-show 4)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from usage.models import UsageRecord
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = [{"role": "user", "content": "w " * 40}]
SURFACES = {
    "chat": ("/v1/chat/completions", {"model": "a", "messages": PROMPT}),
    "messages": ("/v1/messages", {"model": "a", "max_tokens": 100, "messages": PROMPT}),
    "embeddings": ("/v1/embeddings", {"model": "a", "input": "hello"}),
    "api": ("/api/v1/completions", {"messages": PROMPT, "preferred_provider": "a"}),
}


@pytest.fixture
def token(acme) -> str:
    return make_token(acme, TokenScope.COMPLETIONS)


def send_request(port: int, path: str, body: dict, token: str) -> socket.socket:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + payload)
    return sock


def wait_for(condition, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("timed out waiting")


def usage_rows(tenant) -> list[UsageRecord]:
    def written():
        usage_writer.flush()
        with tenant_context(tenant.pk):
            return list(UsageRecord.objects.filter(tenant=tenant))

    return wait_for(written)


@pytest.mark.parametrize("surface", SURFACES)
def test_a_client_that_leaves_before_the_answer_cancels_the_upstream_call(gateway, token, two, upstream, acme, surface):
    path, body = SURFACES[surface]
    upstream.configure("a", latency_ms=5000)  # the upstream is still thinking when the client leaves
    sock = send_request(gateway.port, path, body, token)
    wait_for(lambda: upstream.requests("a"))
    left = time.time()
    sock.close()

    closed_at = wait_for(lambda: upstream.requests("a")[-1].closed_at)
    assert closed_at - left < 0.1
    [row] = usage_rows(acme)
    assert (row.status, row.status_code, row.error_code) == ("error", 499, "client_cancelled")
    assert [a["outcome"] for a in row.attempts] == ["client_cancelled"]
    assert upstream.counts("b") == {}  # leaving is not a failure to fail over from


@pytest.mark.parametrize("surface", ["chat", "messages", "api"])
def test_a_client_that_leaves_mid_stream_cancels_the_upstream_stream(gateway, token, two, upstream, acme, surface):
    path, body = SURFACES[surface]
    upstream.configure("a", chunk_delay_ms=2000)  # one chunk, then a long pause
    sock = send_request(gateway.port, path, {**body, "stream": True}, token)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    left = time.time()
    sock.close()

    closed_at = wait_for(lambda: upstream.requests("a")[-1].closed_at)
    assert closed_at - left < 0.1
    [row] = usage_rows(acme)
    assert (row.status, row.status_code, row.error_code, row.stream) == ("error", 499, "client_cancelled", True)
