"""Usage accounting off the request path.

The router hands one usage.entry.Entry per routed request to `writer.add`: a deque
append, no lock, no I/O. A daemon thread drains the queue whenever
AXONFLOW_USAGE_FLUSH_SECONDS have passed or AXONFLOW_USAGE_BATCH_SIZE entries are
waiting, and per tenant, inside that tenant's RLS context, in one transaction:

- bulk-inserts the UsageRecord rows;
- adds every attempt to its provider's MetricBucket for that minute (requests, errors,
  latency sum and histogram on usage/metrics.py's bounds, tokens, cost), creating the
  row or updating it under a row lock so several processes can share a minute.

The SQL is in usage/store.py. A failed write keeps the entries for the next round,
except when the database refused the data itself (DataError, IntegrityError): then the
tenant's entries are written one by one and only the one that cannot be stored is
dropped (logged), so no entry fails its tenant's batch forever. The ASGI shutdown hook
(last, after the requests in flight have ended) and an atexit hook let the thread end
the batch it is writing and then write what is left, so nothing is lost on a clean stop.

The queue is bounded at MAX_PENDING entries, new and requeued alike: when the writer is
stuck (the database is away) and the queue is full, entries are dropped, counted in
`writer.dropped` and logged at most once a minute, never silently.

While the database is away (a connection error: OperationalError, InterfaceError) the
entries wait here and every round tries again; the outage is logged once when it
begins (not every round) and once when the first write succeeds after it, with how many
records waited (docs/reliability.md, "When Redis or the database is away").
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import defaultdict, deque

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from axonflow_site import events, metrics
from usage import store
from usage.entry import Entry
from usage.observe import observe

log = logging.getLogger("axonflow.usage")

MAX_PENDING = 200_000
DROP_LOG_SECONDS = 60.0


def _write_retrying(tenant_id: int, entries: list[Entry], attempts: int = 5) -> None:
    """SQLite refuses a write at once (no busy wait) when a transaction that began by
    reading must upgrade after another connection wrote; a short retry is all it needs."""
    for attempt in range(attempts):
        try:
            store.write_tenant(tenant_id, entries)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def announce(tenant_id: int, entries: list[Entry]) -> None:
    """Tell the layers above which providers' metrics moved (the board); never raises."""
    provider_ids = {i for e in entries for i in e.attempt_ids if i is not None}
    try:
        events.usage_recorded.send(sender=None, tenant_id=tenant_id, provider_ids=provider_ids)
    except Exception:
        log.exception("a usage_recorded receiver failed")


class UsageWriter:
    """The queue and the thread that drains it (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: deque[Entry] = deque()
        self.autostart = True
        self.dropped = 0  # entries lost to a full queue or refused by the database, since start
        self._dropped_logged = 0
        self._drop_logged_at = -1e9
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failing_since: float | None = None  # monotonic: the first failed write of an outage

    def add(self, entry: Entry) -> None:
        if len(self.pending) >= MAX_PENDING:
            self._drop(1, "usage queue full (is the database reachable?)")
            return
        self.pending.append(entry)
        if self._thread is None and self.autostart:
            self.start()
        if len(self.pending) >= settings.AXONFLOW_USAGE_BATCH_SIZE:
            self._wake.set()

    def start(self) -> None:
        with self._flush_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(settings.AXONFLOW_USAGE_FLUSH_SECONDS)
            self._wake.clear()
            try:
                close_old_connections()
                try:
                    self.flush()
                finally:
                    close_old_connections()
            except Exception:  # a dead thread would leave every later record unwritten until shutdown
                log.exception("usage writer round failed; retrying next round")

    def flush(self) -> int:
        """Write everything queued now; returns the number of entries written.

        Entries of a tenant whose write fails go back to the queue."""
        with self._flush_lock:
            batch: list[Entry] = []
            while self.pending:
                batch.append(self.pending.popleft())
            try:
                observe(batch)
            except Exception:  # the metrics must never cost a usage record
                log.exception("usage: metrics of %d records could not be counted", len(batch))
            by_tenant: dict[int, list[Entry]] = defaultdict(list)
            for entry in batch:
                by_tenant[entry.tenant_id].append(entry)
            written = 0
            for tenant_id, entries in by_tenant.items():
                try:
                    _write_retrying(tenant_id, entries)
                    written += len(entries)
                    self._recovered(len(batch))
                    announce(tenant_id, entries)
                except (DataError, IntegrityError):
                    log.exception("usage write refused for tenant %s; writing its %d records one by one",
                                  tenant_id, len(entries))  # fmt: skip
                    written += self._write_one_by_one(tenant_id, entries)
                except (OperationalError, InterfaceError) as exc:  # the database is away
                    metrics.child(metrics.USAGE_WRITE_FAILURES, "database_away").inc()
                    self._failing(exc, len(batch))
                    self._requeue(entries)
                except Exception:
                    metrics.child(metrics.USAGE_WRITE_FAILURES, "failed").inc()
                    log.exception(
                        "usage write failed for tenant %s; %d records kept for retry", tenant_id, len(entries)
                    )
                    self._requeue(entries)
            return written

    def held(self) -> int:
        """Entries waiting to be written, counted between rounds (a round in progress
        holds its batch off the queue until it has written or requeued it)."""
        with self._flush_lock:
            return len(self.pending)

    def _failing(self, exc: Exception, waiting: int) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("usage: the database cannot be reached (%s: %s); keeping %d record(s) in memory "
                        "(at most %d) and retrying every round", type(exc).__name__, str(exc)[:200], waiting,
                        MAX_PENDING)  # fmt: skip

    def _recovered(self, waiting: int) -> None:
        if self.failing_since is not None:
            log.warning("usage: the database is reachable again after %.0f s; writing the %d record(s) that waited",
                        time.monotonic() - self.failing_since, waiting)  # fmt: skip
            self.failing_since = None

    def _write_one_by_one(self, tenant_id: int, entries: list[Entry]) -> int:
        """Write each entry alone; drop (and count) the ones the database refuses, keep
        the rest for retry if the database goes away meanwhile."""
        written, kept = 0, []
        for entry in entries:
            try:
                _write_retrying(tenant_id, [entry])
                written += 1
            except (DataError, IntegrityError):
                log.exception("usage record %s of tenant %s cannot be stored; dropped", entry.request_id, tenant_id)
                self._drop(1, "refused by the database")
            except Exception:
                kept.append(entry)
        if written:
            left = {id(e) for e in kept}
            announce(tenant_id, [e for e in entries if id(e) not in left])
        if kept:
            self._requeue(kept)
        return written

    def _requeue(self, entries: list[Entry]) -> None:
        room = max(0, MAX_PENDING - len(self.pending))
        if room < len(entries):
            self._drop(len(entries) - room, "usage queue full (is the database reachable?)")
            entries = entries[:room]
        self.pending.extendleft(reversed(entries))

    def _drop(self, count: int, why: str) -> None:
        """Count entries lost; log at most once every DROP_LOG_SECONDS."""
        self.dropped += count
        metrics.child(metrics.USAGE_WRITE_FAILURES, "dropped").inc(count)
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_SECONDS:
            log.error("usage: %d record(s) dropped since the last report (%s); %d in all since start",
                      self.dropped - self._dropped_logged, why, self.dropped)  # fmt: skip
            self._drop_logged_at, self._dropped_logged = now, self.dropped

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and flush what is left (shutdown): the thread first ends
        the batch it is writing (joined), then everything queued is written here.
        Entries the database would not take within `timeout` stay queued (logged)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            if not self.flush():
                break
        if self.pending:
            log.error("usage: %d record(s) could not be written at shutdown", len(self.pending))

    def discard(self) -> None:
        """Forget queued entries, any outage and the drop count (tests, between cases)."""
        self.pending.clear()
        self.failing_since = None
        self.dropped = self._dropped_logged = 0


writer = UsageWriter()
metrics.sample(metrics.USAGE_QUEUE, lambda: len(writer.pending))


async def start_usage_writer() -> None:
    """Lifespan startup hook (axonflow_site/lifespan.py)."""
    writer.start()


async def flush_usage() -> None:
    """Lifespan shutdown hook, the last: stop the thread and write what is queued."""
    await sync_to_async(_stop_writer, thread_sensitive=False)()


def _stop_writer() -> None:
    try:
        writer.stop()
    finally:
        connections.close_all()  # this thread's connections: nothing else would close them


def _flush_at_exit() -> None:
    # The thread may hold a batch it took off the queue: pending alone does not tell.
    thread = writer._thread
    if writer.pending or (thread is not None and thread.is_alive()):
        try:
            writer.stop()
        except Exception:
            log.exception("usage flush at exit failed")


atexit.register(_flush_at_exit)
