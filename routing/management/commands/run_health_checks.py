"""`manage.py run_health_checks [--interval SECONDS] [--once] [--concurrency N]`

Probes every enabled provider of every tenant, each on its tenant's interval
(Tenant.health_interval_seconds, default 30 s), concurrently and each under a timeout.
Run as many of these as you like against PostgreSQL: claims are leases taken with
SKIP LOCKED, so each provider is probed once per interval in total. On SQLite run one
(or none: with AXONFLOW_HEALTH_IN_PROCESS the server probes by itself). See
docs/health.md.

SIGTERM or SIGINT: claim nothing more, finish the probes in flight, exit 0.
"""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from providers.adapters.http import close_session
from routing.health.worker import DEFAULT_CONCURRENCY, HealthWorker


class Command(BaseCommand):
    help = "Run periodic provider health checks (see docs/health.md)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between checks of each provider, for every tenant (default: each tenant's setting)",
        )
        parser.add_argument("--once", action="store_true", help="probe what is due now, then exit")
        parser.add_argument(
            "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="probes in flight at most (default 20)"
        )

    def handle(self, *args, interval=None, once=False, concurrency=DEFAULT_CONCURRENCY, **options):
        if interval is not None and interval <= 0:
            raise CommandError("--interval must be a positive number of seconds")
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        worker = HealthWorker(interval=interval, concurrency=concurrency)
        probed = asyncio.run(self.run(worker, once))
        self.stdout.write(f"run_health_checks: {probed} probe(s) done, exiting")

    async def run(self, worker: HealthWorker, once: bool) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.on_signal, worker, signum)
        self.stdout.write("run_health_checks: started" + (" (one pass)" if once else ""))
        try:
            return await worker.run(once=once)
        finally:
            await close_session()

    def on_signal(self, worker: HealthWorker, signum: int) -> None:
        self.stdout.write(f"run_health_checks: {signal.Signals(signum).name}, finishing the probes in flight")
        worker.stop()
