"""`manage.py run_health_checks` and the worker loop behind it: one pass, concurrency,
crash resistance, SIGTERM, several workers sharing the work (PostgreSQL), and the
in-process loop the server starts through the ASGI lifespan."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from providers import registry
from providers.adapters.base import HealthProbe
from providers.adapters.http import BaseProvider
from providers.models import HealthResult, ProviderConfig
from routing.health import breaker, db_thread, probes
from routing.health.worker import HealthWorker
from tests.conftest import TEST_KEYS, requires_postgres

KEY = "sk-test-worker-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_breaker():
    breaker.reset()
    yield
    db_thread.flush()
    breaker.reset()


@pytest.fixture
def fleet(acme, globex, upstream, make_provider):
    """Two providers per tenant, each probing its own label of the fake upstream."""

    def make(count_per_tenant: int = 2, **fields):
        configs = []
        for tenant in (acme, globex):
            for i in range(count_per_tenant):
                label = f"{tenant.slug}-{i}"
                configs.append(
                    make_provider(
                        tenant,
                        name=label,
                        type="openai",
                        base_url=upstream.base_url(label, "openai"),
                        api_key=KEY,
                        **fields,
                    )
                )
        return configs

    return make


async def in_thread(fn, *args):
    """Run sync ORM code off the loop, closing that thread's connection afterwards (an
    open one would keep PostgreSQL from dropping the test database)."""

    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def results_of(config, as_tenant) -> list[HealthResult]:
    with as_tenant(config.tenant):
        return list(HealthResult.objects.filter(provider_id=config.pk))


def test_once_probes_every_due_provider_of_every_tenant(fleet, upstream, as_tenant, capsys):
    configs = fleet()
    call_command("run_health_checks", "--once")
    assert {c.name: upstream.counts(c.name).get("probe") for c in configs} == {c.name: 1 for c in configs}
    for config in configs:
        assert [(r.status, r.source) for r in results_of(config, as_tenant)] == [("healthy", "probe")]
    assert "4 probe(s) done" in capsys.readouterr().out


def test_once_leaves_providers_that_are_not_due_alone(fleet, upstream, as_tenant):
    configs = fleet(next_check_at=timezone.now() + timedelta(minutes=5))
    call_command("run_health_checks", "--once")
    assert all(not upstream.counts(c.name) for c in configs)


def test_disabled_providers_are_not_probed(fleet, upstream):
    configs = fleet(enabled=False)
    call_command("run_health_checks", "--once")
    assert all(not upstream.counts(c.name) for c in configs)


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "-3"], ["--concurrency", "0"]])
def test_it_rejects_bad_arguments(args):
    with pytest.raises(CommandError):
        call_command("run_health_checks", "--once", *args)


class Gate(BaseProvider):
    """A probe that waits until `expected` probes are in flight together (or 2 s)."""

    type = "custom"
    in_flight = 0
    most = 0
    expected = 0

    async def health_check(self) -> HealthProbe:
        cls = type(self)
        cls.in_flight += 1
        cls.most = max(cls.most, cls.in_flight)
        try:
            for _ in range(200):
                if cls.in_flight >= cls.expected:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
        finally:
            cls.in_flight -= 1
        return HealthProbe(ok=True, latency_ms=1.0)


@pytest.mark.parametrize("concurrency, expected", [(6, 6), (2, 2)])
def test_probes_run_concurrently_up_to_the_limit(acme, make_provider, concurrency, expected):
    registry.register_factory("gate", Gate)
    Gate.in_flight = Gate.most = 0
    Gate.expected = 6
    for i in range(6):
        make_provider(acme, name=f"g{i}", type="custom", settings={"factory": "gate"})
    call_command("run_health_checks", "--once", "--concurrency", str(concurrency))
    assert Gate.most == expected


def test_a_crashing_check_pushes_its_row_forward_and_the_others_go_on(fleet, monkeypatch, as_tenant):
    configs = fleet()
    victim = configs[0]
    real = probes.record_probe

    def record(tenant_id, provider_id, *args):
        if provider_id == victim.pk:
            raise RuntimeError("bug while recording")
        return real(tenant_id, provider_id, *args)

    monkeypatch.setattr(probes, "record_probe", record)
    before = timezone.now()
    call_command("run_health_checks", "--once")
    with as_tenant(victim.tenant):
        victim.refresh_from_db()
    assert victim.next_check_at > before + timedelta(seconds=20)  # no crash loop: next slot
    assert results_of(victim, as_tenant) == []
    assert all(len(results_of(c, as_tenant)) == 1 for c in configs[1:])


async def test_stop_lets_the_probe_in_flight_finish(fleet, upstream, as_tenant, http_session):
    configs = await in_thread(fleet, 1)
    upstream.configure("*", latency_ms=400)
    worker = HealthWorker(interval=30)
    task = asyncio.create_task(worker.run())
    for _ in range(300):
        if sum(upstream.counts(c.name).get("probe", 0) for c in configs) == len(configs):
            break
        await asyncio.sleep(0.01)
    worker.stop()
    assert await asyncio.wait_for(task, 10) == len(configs)
    stored = await in_thread(lambda: [results_of(c, as_tenant) for c in configs])
    assert [len(r) for r in stored] == [1] * len(configs)


# --- real processes ------------------------------------------------------------------------------


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def spawn_worker(*args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AXONFLOW_ENCRYPTION_KEYS": TEST_KEYS[0],
        "DEBUG": "true",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
        "AXONFLOW_ALLOW_PRIVATE_BASE_URLS": "true",  # the fake upstream is on 127.0.0.1
    }
    env.pop("REDIS_URL", None)  # the board is not under test here
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_health_checks", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 30) -> list[str]:
    """Read the worker's output until a line contains `text` (in a thread: readline blocks)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"worker never said {text!r}: {''.join(lines)}"
    return lines


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    return out


def set_due(configs, when, as_tenant) -> None:
    for config in configs:
        with as_tenant(config.tenant):
            ProviderConfig.objects.filter(pk=config.pk).update(next_check_at=when)


def test_sigterm_finishes_the_probe_in_flight_and_exits_cleanly(fleet, upstream, as_tenant, capsys):
    configs = fleet(1)
    upstream.configure("*", latency_ms=1500)

    def terminate_once_probing() -> None:
        for _ in range(1000):
            if sum(upstream.counts(c.name).get("probe", 0) for c in configs) == len(configs):
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the command's own handler, on its own loop

    threading.Thread(target=terminate_once_probing, daemon=True).start()
    call_command("run_health_checks", "--interval", "60")  # returns only through the signal
    out = capsys.readouterr().out
    assert "SIGTERM, finishing the probes in flight" in out
    assert "2 probe(s) done" in out
    assert [len(results_of(c, as_tenant)) for c in configs] == [1] * len(configs)


@requires_postgres
def test_two_workers_probe_each_provider_once_per_interval(fleet, upstream, as_tenant):
    configs = fleet(4, next_check_at=timezone.now() + timedelta(days=1))
    interval = 1.5
    workers = [spawn_worker("--interval", str(interval), "--concurrency", "3") for _ in range(2)]
    try:
        for worker in workers:
            wait_for_line(worker, "started")
        start = timezone.now() + timedelta(seconds=0.3)
        set_due(configs, start, as_tenant)
        # three slots (start, +1.5 s, +3 s); stop half an interval before the fourth
        time.sleep(0.3 + 2.5 * interval)
        outputs = [stop(w) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    probes = {c.name: upstream.counts(c.name).get("probe", 0) for c in configs}
    assert probes == {c.name: 3 for c in configs}, outputs
    done = [int(re.search(r"(\d+) probe\(s\) done", out).group(1)) for out in outputs]
    assert sum(done) == 3 * len(configs)  # the two workers' shares add up, nothing twice
    for config in configs:
        times = [r.at for r in upstream.requests(config.name) if r.kind == "probe"]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) > interval * 0.7, (config.name, gaps)  # never twice in one slot


# --- the in-process loop (embedded default) --------------------------------------------------------


async def run_lifespan(application):
    """Start the ASGI app's lifespan; returns a coroutine function that shuts it down."""
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    task = asyncio.create_task(application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    while not sent:
        await asyncio.sleep(0.01)
    assert sent[-1]["type"] == "lifespan.startup.complete"

    async def shutdown():
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 20)
        assert sent[-1]["type"] == "lifespan.shutdown.complete"

    return shutdown


async def test_the_server_probes_by_itself_when_health_runs_in_process(
    settings, fleet, upstream, as_tenant, http_session
):
    from axonflow_site.asgi import application

    settings.AXONFLOW_HEALTH_IN_PROCESS = True
    configs = await in_thread(fleet, 1)
    shutdown = await run_lifespan(application)
    try:
        for _ in range(1000):
            if all(upstream.counts(c.name).get("probe") for c in configs):
                break
            await asyncio.sleep(0.01)
    finally:
        await shutdown()
    stored = await in_thread(lambda: [results_of(c, as_tenant) for c in configs])
    assert [len(r) for r in stored] == [1] * len(configs)


async def test_with_separate_workers_the_server_does_not_probe(settings, fleet, upstream, http_session):
    from axonflow_site.asgi import application
    from routing.health import worker

    settings.AXONFLOW_HEALTH_IN_PROCESS = False
    await in_thread(fleet, 1)
    shutdown = await run_lifespan(application)
    assert worker._in_process is None
    await shutdown()
    assert upstream.stats() == {}
