"""A stack of child processes, as production runs it, for the tests that need real
server processes (shutdown, JSON logs, metrics across processes): the fake upstream
and a SQLite database migrated and seeded by bench/seed.py (tenant `bench`, provider
`p0` on the fake, a completions token), each server on a copy of it or a shared one.

It uses SQLite files of its own and no Redis, whatever DATABASE_URL and REDIS_URL say
(CI sets both): pytest-django's test database is held in this process's transactions,
invisible to a child; a file of our own is read after the server exits without any
set-up.

    def test_it(stack, start_server):   # tests/conftest.py loads this module as a plugin
        server = start_server("a", ["-m", "uvicorn", "axonflow_site.asgi:application", "--port", "{port}"])
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
UVICORN = ["-m", "uvicorn", "axonflow_site.asgi:application", "--port", "{port}", "--lifespan", "on"]


@dataclass
class Stack:
    env: dict[str, str]
    template: Path  # the migrated, seeded database each test starts from a copy of
    upstream_port: int
    token: str
    tmp: Path

    def configure_upstream(self, **behaviour) -> None:
        """Every label's behaviour on the fake upstream (POST /_control/*)."""
        for path, body in (("reset", {}), ("*", behaviour)):
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.upstream_port}/_control/{path}", json.dumps(body).encode(), method="POST"
            )
            urllib.request.urlopen(request, timeout=5).read()


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    database: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def run_python(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The fake upstream, and a database migrated and seeded (tenant `bench`, one
    provider `p0` on the fake, a token) for the servers the tests start."""
    tmp = tmp_path_factory.mktemp("stack")
    template = tmp / "template.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXONFLOW_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="axonflow_site.settings",
        DEBUG="false",
        SECRET_KEY="graceful-shutdown-test-" + "x" * 40,
        AXONFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        AXONFLOW_ALLOW_PRIVATE_BASE_URLS="true",  # the fake upstream is on 127.0.0.1
        AXONFLOW_HEALTH_IN_PROCESS="true",  # the embedded default: its stop is part of the shutdown
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        DATABASE_URL=f"sqlite:///{template}",
    )
    run_python(env, "manage.py", "migrate", "-v0")
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "manage.py", "fake_upstream", "--port", str(upstream_port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(upstream_port, upstream)
        token = run_python(env, "bench/seed.py", f"http://127.0.0.1:{upstream_port}", "1").strip().splitlines()[-1]
        yield Stack(env, template, upstream_port, token, tmp)
    finally:
        upstream.terminate()
        upstream.wait(10)


@pytest.fixture
def start_server(stack):
    """start_server(name, command, database=None, **env): a server on a copy of the
    seeded database (or on `database`), killed at the end of the test if still running."""
    started: list[Server] = []

    def start(name: str, command: list[str], database: Path | None = None, **env: str) -> Server:
        started.append(launch(stack, name, command, database, **env))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def launch(stack: Stack, name: str, command: list[str], database: Path | None = None, **env: str) -> Server:
    """Its output goes to a file: a pipe nobody reads would fill and block it. A server
    gets a copy of the seeded database of its own, unless given one (to share)."""
    if database is None:
        database = stack.tmp / f"{name}.sqlite3"
        for suffix in ("", "-wal"):
            if Path(f"{stack.template}{suffix}").exists():
                shutil.copy(f"{stack.template}{suffix}", f"{database}{suffix}")
    port = free_port()
    log = stack.tmp / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, *[a.format(port=port) for a in command]],
            cwd=ROOT, env={**stack.env, "DATABASE_URL": f"sqlite:///{database}", **env}, stdout=out, stderr=out,
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", port, database, log)
    try:
        wait_for_port(port, process)
    except AssertionError:
        process.kill()
        raise AssertionError(server.output()) from None
    return server
