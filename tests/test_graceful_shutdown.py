"""SIGTERM on a real server (SPEC §5, README "Shutdown"): it stops accepting, lets the
streams in flight finish within AXONFLOW_SHUTDOWN_GRACE_SECONDS, writes their usage,
then exits; streams the grace period does not cover are cut and still accounted for.

The stack runs as child processes, as in production (tests/fixtures_stack.py): the
fake upstream, and the server through `manage.py serve` or uvicorn's own command line,
on SQLite files of its own: what is under test is the server process's shutdown, which
is the same on either database.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.fixtures_stack import Server

STREAMS = 50
WORDS = 9  # the fake echoes "Echo: " and the prompt, one word a chunk


@dataclass
class Stream:
    """One streaming completion as the client saw it."""

    prompt: str
    request_id: str = ""
    text: str = ""
    done: bool = False  # ended with `data: [DONE]`
    error: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: float = 0.0


async def run_stream(session: aiohttp.ClientSession, server: Server, token: str, stream: Stream) -> None:
    body = {"model": "p0", "stream": True, "messages": [{"role": "user", "content": stream.prompt}]}
    try:
        async with session.post(
            f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200, await response.text()
            stream.request_id = response.headers["x-request-id"]
            async for raw in response.content:
                stream.started.set()
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    stream.done = True
                elif line.startswith("data: "):
                    for choice in json.loads(line[6:])["choices"]:
                        stream.text += choice["delta"].get("content") or ""
    except aiohttp.ClientError as exc:  # cut by the server
        stream.error = repr(exc)
    finally:
        stream.started.set()
        stream.ended_at = time.monotonic()


async def open_streams(server: Server, token: str, count: int):
    """`count` streams running, each past its first bytes; returns (session, streams, tasks)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(60))
    words = " ".join(f"w{i}" for i in range(WORDS - 2))
    streams = [Stream(f"stream {n} {words}") for n in range(count)]
    tasks = [asyncio.create_task(run_stream(session, server, token, s)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.started.wait() for s in streams)), 15)
    assert not any(s.error for s in streams), [s.error for s in streams if s.error]
    return session, streams, tasks


async def idle_keep_alive_connection(server: Server, token: str) -> asyncio.StreamReader:
    """A connection that has been answered once and is now idle (HTTP/1.1 keep-alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return reader


async def refused_after(server: Server, timeout: float = 3.0) -> float:
    """How long until a new connection is no longer served (monotonic time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(f"{server.url}/v1/models", timeout=aiohttp.ClientTimeout(1)) as response:
                    await response.read()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError("the server still accepts connections after SIGTERM")


async def exit_code(server: Server, timeout: float) -> int:
    try:
        return await asyncio.to_thread(server.process.wait, timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise AssertionError(f"the server did not exit within {timeout} s\n{server.output()}") from None


def usage_rows(database: Path) -> list[dict]:
    """The server's usage records, read from its file after it has exited."""
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT request_id, status, status_code, error_code, stream FROM routing_usagerecord")
        return [dict(r) for r in rows]


def requests_in_buckets(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT COALESCE(SUM(request_count), 0) FROM routing_metricbucket").fetchone()[0]


async def test_it_finishes_50_streams_in_flight_and_writes_their_usage_before_exiting(stack, start_server):
    grace = 20
    # 12 frames (role, 9 words, finish, [DONE]) 200 ms apart: each stream takes about 2.4 s.
    stack.configure_upstream(chunk_delay_ms=200)
    server = start_server(
        "serve", ["manage.py", "serve", "--no-upstream", "--port", "{port}"],
        AXONFLOW_SHUTDOWN_GRACE_SECONDS=str(grace),
    )  # fmt: skip
    idle = await idle_keep_alive_connection(server, stack.token)
    session, streams, tasks = await open_streams(server, stack.token, STREAMS)
    try:
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # The idle connection is closed at once, rather than holding the shutdown up.
        assert await asyncio.wait_for(idle.read(), 2) == b""
        refused = await refused_after(server)
        await asyncio.wait_for(asyncio.gather(*tasks), grace)
        code = await exit_code(server, grace)
        exited = time.monotonic()
    finally:
        await session.close()

    assert code == 0, server.output()
    assert all(s.done and not s.error for s in streams), [s.error for s in streams if not s.done][:3]
    assert all(s.text == f"Echo: {s.prompt}" for s in streams)
    # They were in flight at SIGTERM, new connections were refused meanwhile, and the
    # server left as soon as they had ended, well inside the grace period.
    assert refused < min(s.ended_at for s in streams)
    assert min(s.ended_at for s in streams) > signalled
    assert exited - signalled < grace / 2
    rows = usage_rows(server.database)
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in streams)
    assert {(r["status"], r["status_code"], r["stream"]) for r in rows} == {("success", 200, 1)}
    assert requests_in_buckets(server.database) == STREAMS


async def test_it_cuts_the_streams_still_open_at_the_grace_deadline_and_accounts_for_them(stack, start_server):
    grace, count = 1, 10
    # Each stream would take about 7 s, far past the grace period.
    stack.configure_upstream(chunk_delay_ms=600)
    server = start_server(
        "uvicorn",
        ["-m", "uvicorn", "axonflow_site.asgi:application", "--port", "{port}", "--loop", "uvloop",
         "--http", "httptools", "--lifespan", "on", "--timeout-graceful-shutdown", str(grace)],
    )  # fmt: skip
    session, streams, tasks = await open_streams(server, stack.token, count)
    try:
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await exit_code(server, grace + 10)
        exited = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    finally:
        await session.close()

    # uvicorn's own command line, once its shutdown is complete, raises the signal again
    # with the default handler: the status says "terminated by SIGTERM" (`manage.py
    # serve` exits 0 instead).
    assert code == -signal.SIGTERM, server.output()
    assert grace <= exited - signalled < grace + 5
    assert not any(s.done for s in streams)
    rows = usage_rows(server.database)
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in streams)
    # 499, nginx's "client closed request": the router's record of an answer cut short.
    assert {(r["status"], r["status_code"], r["stream"]) for r in rows} == {("error", 499, 1)}
    assert {r["error_code"] for r in rows} == {"client_cancelled"}
    assert requests_in_buckets(server.database) == count


def test_serve_gives_uvicorn_the_grace_period(settings, monkeypatch):
    import uvicorn
    from django.core.management import call_command

    seen = {}

    class RecordingServer:
        def __init__(self, config):
            seen["config"], self.started, self.should_exit = config, True, False

        def run(self):
            pass

    settings.AXONFLOW_SHUTDOWN_GRACE_SECONDS = 7
    settings.AXONFLOW_HEALTH_IN_PROCESS = True  # no health worker process to start
    monkeypatch.setattr(uvicorn, "Server", RecordingServer)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        call_command("serve", "--no-upstream", stdout=io.StringIO())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen["config"].timeout_graceful_shutdown == 7
