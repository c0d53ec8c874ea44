"""`make run`: the fake upstream (a separate process), then the ASGI server with the
health loop inside it (embedded default) or a separate health worker (with Redis).

`make run-two` (`--instances 2`): as many server processes on consecutive ports, sharing
PostgreSQL and Redis (README "Several instances"), with one fake upstream and one
health worker; refused without DATABASE_URL and REDIS_URL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve AxonFlow with uvicorn (uvloop + httptools), plus the demo fake upstream."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--upstream-port", type=int, default=8100)
        parser.add_argument("--no-upstream", action="store_true", help="do not start the fake upstream")
        parser.add_argument(
            "--instances", type=int, default=1,
            help="server processes, on --port and the ports after it (more than one needs DATABASE_URL and REDIS_URL)",
        )  # fmt: skip

    def handle(self, host, port, upstream_port, no_upstream, instances=1, **options):
        import uvicorn

        if instances < 1:
            raise CommandError("--instances must be at least 1.")
        if instances > 1 and not (settings.IS_POSTGRES and settings.REDIS_URL):
            raise CommandError(
                "Several instances share one PostgreSQL database and one Redis: set DATABASE_URL "
                "(postgres://...) and REDIS_URL (redis://...). SQLite and the in-memory channel "
                "layer belong to one process."
            )
        children = []
        manage = [sys.executable, "manage.py"]
        if not no_upstream:
            children.append(subprocess.Popen([*manage, "fake_upstream", "--port", str(upstream_port)]))
            # The first health probes run at startup: let them find the upstream listening.
            wait_for_port("127.0.0.1", upstream_port)
        if not settings.AXONFLOW_HEALTH_IN_PROCESS:
            children.append(subprocess.Popen([*manage, "run_health_checks"]))
        if instances > 1:
            return self.serve_instances(host, port, instances, children, no_upstream, upstream_port)
        self.stdout.write(
            f"\n  AxonFlow console:  http://{host}:{port}/\n"
            f"  Demo login:        demo / demo-password\n"
            f"  API docs:          http://{host}:{port}/api/docs/\n"
            + (f"  Fake upstream:     http://127.0.0.1:{upstream_port}/\n" if not no_upstream else "")
            + (f"  Metrics:           http://{host}:{port}/metrics (Authorization: Bearer $AXONFLOW_METRICS_TOKEN)\n"
               if settings.AXONFLOW_METRICS_TOKEN else "")
        )  # fmt: skip
        config = uvicorn.Config(
            "axonflow_site.asgi:application", host=host, port=port, loop="uvloop", http="httptools",
            lifespan="on", log_level="info", timeout_graceful_shutdown=settings.AXONFLOW_SHUTDOWN_GRACE_SECONDS,
            log_config=None,  # settings.LOGGING has configured uvicorn's loggers (LOG_FORMAT)
        )  # fmt: skip
        server = uvicorn.Server(config)
        # On SIGTERM uvicorn stops accepting, lets requests and streams in flight finish
        # (up to the grace), runs the lifespan shutdown (usage flushed), and then raises
        # the signal again for the handler it replaced. This one only asks uvicorn to
        # stop (a no-op by then), so a clean stop exits 0 and still stops the children
        # below instead of dying by SIGTERM; one that comes before uvicorn has taken the
        # signal over makes it stop as soon as it has started.
        signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
        try:
            server.run()
        except KeyboardInterrupt:  # Ctrl+C, raised again the same way (as uvicorn.run does)
            pass
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(timeout=10)

    def serve_instances(self, host, port, instances, children, no_upstream, upstream_port) -> None:
        """Each instance a uvicorn process of its own, as behind a load balancer; this
        process waits, and on SIGTERM or Ctrl+C stops them (each finishes its requests
        within the grace period) and the other children."""
        ports = range(port, port + instances)
        for each in ports:
            children.insert(0, subprocess.Popen([
                sys.executable, "-m", "uvicorn", "axonflow_site.asgi:application", "--host", host,
                "--port", str(each), "--loop", "uvloop", "--http", "httptools", "--lifespan", "on",
                "--timeout-graceful-shutdown", str(settings.AXONFLOW_SHUTDOWN_GRACE_SECONDS),
            ]))  # fmt: skip
        lines = [f"  AxonFlow instance: http://{host}:{each}/" for each in ports]
        lines.append("  Demo login:        demo / demo-password (on either)")
        if not no_upstream:
            lines.append(f"  Fake upstream:     http://127.0.0.1:{upstream_port}/")
        self.stdout.write("\n" + "\n".join(lines) + "\n")
        stopping = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        try:
            while not stopping and all(child.poll() is None for child in children[:instances]):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=settings.AXONFLOW_SHUTDOWN_GRACE_SECONDS + 10)
                except subprocess.TimeoutExpired:
                    child.kill()


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
