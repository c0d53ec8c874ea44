"""The health worker loop, shared by `manage.py run_health_checks` and the in-process
task the server starts when AXONFLOW_HEALTH_IN_PROCESS is on (the embedded default:
the in-memory channel layer does not cross processes, so probes that should reach
the board must run where the board's sockets are).

Shape of hc's sendalerts: claim what is due, work on it, and on `stop()` (SIGTERM)
claim nothing more, let the probes in flight finish, and return.

Fairness between tenants (SPEC §5, "no tenant can starve another's probes"): the
`concurrency` slots are claimed round robin across tenants with due providers, and
every tenant also has one reserved slot beyond them, used when the pool is full and the
tenant has no probe in flight. A tenant whose hundreds of providers hang until their
timeout fills the pool, but another tenant's due probe still starts at the next poll
(tests/test_probe_fairness.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from django.conf import settings

from routing.health import db_thread, probes

log = logging.getLogger("axonflow.worker")

DEFAULT_CONCURRENCY = 20
MAX_POLL_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 15.0


class HealthWorker:
    """Probes due providers of every tenant, `concurrency` at a time, plus at most one
    more per tenant that has none in flight (its reserved slot; at most `concurrency`
    such extras in all, so never more than twice `concurrency`).

    `interval` overrides every tenant's health_interval_seconds (seconds, may be a
    fraction: tests and demos). The poll period is a tenth of the interval, at most a
    second, so a due provider waits at most that long past its slot."""

    def __init__(self, interval: float | None = None, concurrency: int = DEFAULT_CONCURRENCY):
        self.interval = interval
        self.concurrency = max(1, concurrency)
        self.poll_seconds = min(MAX_POLL_SECONDS, max(0.02, (interval or MAX_POLL_SECONDS * 10) / 10))
        self.shutdown = False
        self.probed = 0
        self._in_flight: set[asyncio.Task] = set()
        self._per_tenant: Counter[int] = Counter()
        self._wake: asyncio.Event | None = None
        self._offset = 0

    def stop(self) -> None:
        """Claim nothing more; run() returns once the probes in flight are done."""
        self.shutdown = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, once: bool = False) -> int:
        """Loop until stop() (or after one pass with `once`); returns probes done."""
        self._wake = asyncio.Event()
        try:
            while not self.shutdown:
                started = await self.sweep()
                if len(self._in_flight) >= self.concurrency:
                    # The pool is full: wait until a slot frees or, looping, until the next
                    # poll, when a tenant with nothing in flight may take its reserved slot.
                    timeout = None if once else self.poll_seconds
                    await asyncio.wait(self._in_flight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if once:
                    if not started:
                        break
                    continue
                await self._sleep(self.poll_seconds)
        finally:
            if self._in_flight:
                await asyncio.wait(self._in_flight)
        return self.probed

    async def sweep(self) -> int:
        """Claim due providers for the free slots (and the reserved ones of tenants with
        nothing in flight) and start their probes."""
        free = max(0, self.concurrency - len(self._in_flight))
        reserved = max(0, 2 * self.concurrency - len(self._in_flight) - free)
        if not free and not reserved:
            return 0
        busy = {tenant_id: n for tenant_id, n in self._per_tenant.items() if n}
        try:
            claimed = await db_thread.run_in_writer(
                probes.claim_due, self.interval, free, self._offset, busy, reserved
            )
        except Exception:  # the database is away: log, and try again next poll
            log.exception("claiming due providers failed")
            return 0
        self._offset += 1
        for config, thresholds in claimed:
            task = asyncio.create_task(self._check(config, thresholds), name=f"probe-{config.pk}")
            self._in_flight.add(task)
            self._per_tenant[config.tenant_id] += 1
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def _check(self, config, thresholds) -> None:
        try:
            await probes.acheck(config, thresholds)
        except Exception:  # the lease already moved the row forward: no crash loop
            log.exception("health check of provider %s (tenant %s) crashed", config.pk, config.tenant_id)
        finally:
            self.probed += 1
            self._per_tenant[config.tenant_id] -= 1
            if not self._per_tenant[config.tenant_id]:
                del self._per_tenant[config.tenant_id]

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass


# --- the in-process loop (embedded default) ----------------------------------------------------

_in_process: tuple[HealthWorker, asyncio.Task] | None = None


async def start_in_process_worker() -> None:
    """Start probing inside the server process when AXONFLOW_HEALTH_IN_PROCESS is on."""
    global _in_process
    if not settings.AXONFLOW_HEALTH_IN_PROCESS or _in_process is not None:
        return
    worker = HealthWorker()
    _in_process = (worker, asyncio.create_task(worker.run(), name="axonflow-health"))
    log.info("health checks run inside this server process (AXONFLOW_HEALTH_IN_PROCESS)")


async def stop_in_process_worker() -> None:
    global _in_process
    if _in_process is None:
        return
    worker, task = _in_process
    _in_process = None
    worker.stop()
    try:
        await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE_SECONDS)
    except TimeoutError:
        log.warning("in-process health worker did not stop within %s s", SHUTDOWN_GRACE_SECONDS)

