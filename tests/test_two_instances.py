"""Two server processes on one PostgreSQL database and one Redis behave as one (SPEC §5;
docs/reliability.md, "Several instances"):

- a configuration change made through one is in force on the other's next request
  (routing/peers.py: the API's PATCH answers once every process has dropped its snapshot);
- a circuit opened by traffic through one keeps the other from sending that provider
  requests (routing/health/breaker.py publishes it; the other applies it to its table);
- usage from both lands in the one database, so the status API counts both, whichever
  instance is asked, and a board open on one shows the traffic through the other (its
  cards read the same minute buckets; the push crosses processes through Redis).

The stack runs as child processes, as `make run-two` runs it: the fake upstream and two
gateways (uvicorn, lifespan on), but no health worker, whose probes would add to the
fake's request counts. They use a scratch database created, migrated and dropped here
(pytest-django's test database lives in this process's transactions, invisible to a
child) and a channel prefix of their own on the Redis of REDIS_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet
from django.conf import settings

from tests.conftest import requires_postgres, requires_redis

pytestmark = [requires_postgres, requires_redis, pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parent.parent
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
PROVIDERS = 2  # p0 and p1, on the fake upstream
VIEWER, VIEWER_PASSWORD = "viewer", "two-instances-viewer"


@dataclass
class Instance:
    name: str
    process: subprocess.Popen
    client: httpx.Client
    log: Path
    sent: int = 0  # completions sent through it

    def chat(self) -> httpx.Response:
        response = self.client.post("/v1/chat/completions", json=CHAT)
        self.sent += 1
        assert response.status_code == 200, response.text
        return response

    def provider_of_next_request(self) -> str:
        return self.chat().headers["x-axonflow-provider"]

    def patch(self, provider: str, **fields) -> None:
        response = self.client.patch(f"/api/v1/providers/{provider}/", json=fields)
        assert response.status_code == 200, response.text

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    a: Instance
    b: Instance
    upstream: httpx.Client
    prefix: str = ""  # AXONFLOW_CHANNEL_PREFIX of both: their keys in Redis start with it

    def fake(self, label: str, **behaviour) -> None:
        """Set a label's behaviour on the fake upstream (`reset` for every label's)."""
        path = "reset" if label == "reset" else label
        assert self.upstream.post(f"/_control/{path}", json=behaviour).status_code == 200

    def upstream_requests(self, label: str) -> int:
        return self.upstream.get("/_control/stats").json().get(label, {}).get("total", 0)

    def weights(self, through: Instance, **weights: int) -> None:
        """Raise before lowering, so the pool never passes through all-zero weights."""
        for name, weight in sorted(weights.items(), key=lambda item: -item[1]):
            through.patch(name, weight=weight)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def run_python(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def scratch_database():
    """(name, url, admin connection): a new, empty database on the server of DATABASE_URL,
    created by the application role (CI grants it CREATEDB)."""
    import psycopg

    db = settings.DATABASES["default"]
    host, port, user, password = db["HOST"] or "127.0.0.1", db["PORT"] or 5432, db["USER"], db["PASSWORD"]
    name = f"axonflow_two_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(host=host, port=port, user=user, password=password or None, dbname="postgres")
    admin.autocommit = True
    admin.execute(f'CREATE DATABASE "{name}"')
    credentials = quote(user) + (f":{quote(password)}" if password else "")
    return name, f"postgres://{credentials}@{host}:{port}/{name}", admin


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    with two_instances(tmp_path_factory.mktemp("two")) as stack:
        yield stack


@contextlib.contextmanager
def two_instances(tmp: Path, **extra_env: str):
    """The fake upstream and gateways a and b on a scratch database (`extra_env` added to
    their environment); everything stopped and dropped at the end."""
    import redis

    name, url, admin = scratch_database()
    prefix = f"two-{uuid.uuid4().hex[:8]}"  # several runs may share one Redis
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXONFLOW_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="axonflow_site.settings",
        DEBUG="false",
        SECRET_KEY="two-instances-test-" + "x" * 40,
        AXONFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",  # plain http on 127.0.0.1: cookies without the Secure flag
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        AXONFLOW_ALLOW_PRIVATE_BASE_URLS="true",  # the fake upstream is on 127.0.0.1
        AXONFLOW_HEALTH_IN_PROCESS="false",
        AXONFLOW_USAGE_FLUSH_SECONDS="0.2",
        AXONFLOW_CHANNEL_PREFIX=prefix,
        DATABASE_URL=url,
        REDIS_URL=settings.REDIS_URL,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        **extra_env,
    )
    processes: list[subprocess.Popen] = []
    clients: list[httpx.Client] = []

    def spawn(label: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = tmp / f"{label}.log"
        with log.open("w") as out:  # a pipe nobody reads would fill and block it
            processes.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=out))
        return processes[-1], log

    try:
        run_python(env, "manage.py", "migrate", "-v0")
        upstream_port = free_port()
        spawn("upstream", "manage.py", "fake_upstream", "--port", str(upstream_port))
        wait_until(lambda: listening(upstream_port), 20, "the fake upstream")
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        token = run_python(env, "bench/seed.py", upstream_url, str(PROVIDERS)).strip().splitlines()[-1]
        run_python(env, "manage.py", "addmember", "bench", VIEWER, "--role", "viewer", "--password", VIEWER_PASSWORD)
        instances = []
        for label in ("a", "b"):
            port = free_port()
            process, log = spawn(
                label, "-m", "uvicorn", "axonflow_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--lifespan", "on", "--no-access-log",
            )  # fmt: skip
            wait_until(lambda: listening(port) or process.poll() is not None, 30, f"gateway {label}")
            assert process.poll() is None, log.read_text()
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            clients.append(client)
            instances.append(Instance(label, process, client, log))
        # Both listen to each other before anything is asked of them.
        channel = f"{prefix}:peers:{name}"
        bus = redis.Redis.from_url(settings.REDIS_URL)
        try:
            wait_until(lambda: bus.pubsub_numsub(channel)[0][1] == 2, 20, "both gateways to subscribe")
        finally:
            bus.close()
        upstream = httpx.Client(base_url=upstream_url, timeout=10)
        clients.append(upstream)
        yield Stack(instances[0], instances[1], upstream, prefix)
    finally:
        for client in clients:
            client.close()
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_weight_changed_through_one_instance_is_used_by_the_other_on_its_next_request(two):
    two.fake("reset")
    two.weights(two.a, p0=100, p1=0)
    assert two.b.provider_of_next_request() == "p0"  # b now holds a snapshot with these weights
    for turn in range(6):
        via, other = (two.a, two.b) if turn % 2 == 0 else (two.b, two.a)
        new, old = ("p1", "p0") if turn % 2 == 0 else ("p0", "p1")
        two.weights(via, **{new: 100, old: 0})
        assert other.provider_of_next_request() == new, f"turn {turn}: {other.name} still routes to {old}"
        assert via.provider_of_next_request() == new
    # Disabling works the same way (any field of the row: the whole snapshot is reloaded).
    two.weights(two.a, p0=100, p1=0)
    assert two.b.provider_of_next_request() == "p0"
    two.a.patch("p0", enabled=False)
    assert two.b.provider_of_next_request() == "p1"
    two.a.patch("p0", enabled=True)
    assert two.b.provider_of_next_request() == "p0"


def test_a_circuit_opened_through_one_instance_keeps_the_other_from_sending_requests(two):
    two.fake("reset")
    two.weights(two.b, p0=100, p1=0)  # p0 is always tried first; p1 only takes the failovers
    assert two.b.provider_of_next_request() == "p0"
    two.fake("p0", failure_rate=1, failure_kind="500")
    # Through a until its circuit opens: traffic_min_requests (10) attempts at most half of
    # them good, fewer when a's recent attempts on p0 (the test above) count in the window.
    for sent in range(1, 21):
        before = two.upstream_requests("p0")
        assert two.a.provider_of_next_request() == "p1"  # p0 failed, or was skipped: p1 answered
        if two.upstream_requests("p0") == before:
            break  # a no longer tries p0
    else:
        pytest.fail("a kept sending requests to a provider that fails every one")
    assert sent > 1
    for _ in range(5):
        assert two.b.provider_of_next_request() == "p1"
    assert two.upstream_requests("p0") == before, "b sent requests to the provider whose circuit a opened"
    # b learnt it from a's message (a stores the new status too, which reaches b's snapshot later).
    assert "circuit opened in another process" in two.b.output()


def test_usage_from_both_instances_is_counted_by_either(two):
    two.fake("reset")

    def totals(via: Instance) -> tuple[int, int]:
        usage = via.client.get("/api/v1/usage/", params={"limit": 1}).json()
        status = via.client.get("/api/v1/status/", params={"window": "1h"}).json()
        return usage["count"], sum(p["metrics"]["request_count"] for p in status["providers"])

    wait_until(lambda: totals(two.a)[0] == two.a.sent + two.b.sent, 10, "usage of earlier tests")
    records, attempts = totals(two.a)
    ids = [instance.chat().headers["x-request-id"] for instance in (two.a, two.b, two.a, two.b)]
    expected = (records + 4, attempts + 4)
    wait_until(lambda: totals(two.a) == expected and totals(two.b) == expected, 10, "usage from both instances")
    for request_id in ids:  # each record, whichever process wrote it, is found through either
        for via in (two.a, two.b):
            found = via.client.get("/api/v1/usage/", params={"request_id": request_id}).json()
            assert found["count"] == 1, (via.name, request_id)


@contextlib.asynccontextmanager
async def board(instance: Instance):
    """The board of `instance` as a viewer's browser opens it: sign in, then the socket.
    Yields a queue of the cards it is sent (every card once, then the pushes)."""
    import aiohttp

    base = str(instance.client.base_url).rstrip("/")
    frames: asyncio.Queue[str] = asyncio.Queue()

    async def read(socket) -> None:
        async for frame in socket:
            frames.put_nowait(frame.data)

    # unsafe=True: keep the cookies a server on an IP address (127.0.0.1) sets
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get("/login/") as page:
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await page.text()).group(1)
        form = {"username": VIEWER, "password": VIEWER_PASSWORD, "csrfmiddlewaretoken": csrf}
        async with session.post("/login/", data=form, headers={"Referer": f"{base}/login/"}, allow_redirects=False):
            pass
        async with session.ws_connect("/ws/status/", headers={"Origin": base}) as socket:
            reader = asyncio.ensure_future(read(socket))
            try:
                yield frames
            finally:
                reader.cancel()


def requests_on_card(html: str, provider: str) -> int | None:
    if f'data-provider="{provider}"' not in html:
        return None
    return int(re.search(r'<dd class="requests">(\d+)</dd>', html).group(1))


async def test_a_board_open_on_one_instance_shows_the_traffic_through_the_other(two):
    two.fake("reset")
    await asyncio.to_thread(two.weights, two.a, p1=100, p0=0)

    def stored() -> int:  # what the status API (the same minute buckets) says, through b
        status = two.b.client.get("/api/v1/status/", params={"window": "5m"}).json()
        return [p for p in status["providers"] if p["name"] == "p1"][0]["metrics"]["request_count"]

    async with board(two.b) as frames:
        opened = None
        while opened is None:  # the first cards: the board as it opens
            opened = requests_on_card(await asyncio.wait_for(frames.get(), 10), "p1")
        shown = opened
        # A publisher trusts "no board is open" for console.live.PRESENCE_CHECK_SECONDS:
        # a's traffic reaches this new board within that, so keep some coming meanwhile.
        async with asyncio.timeout(20):
            while shown == opened:
                assert await asyncio.to_thread(two.a.provider_of_next_request) == "p1"  # through a only
                with contextlib.suppress(TimeoutError):
                    while shown == opened:
                        shown = max(shown, requests_on_card(await asyncio.wait_for(frames.get(), 1), "p1") or 0)
            while shown < await asyncio.to_thread(stored):  # until the last push is in
                shown = max(shown, requests_on_card(await frames.get(), "p1") or 0)
        assert shown == await asyncio.to_thread(stored) > opened
