"""Usage accounting off the request path.

The router calls `record_success` / `record_failure` once per routed request; they
append one Entry to an in-memory queue (a deque append: no lock, no I/O). A daemon
thread, the writer, drains the queue whenever AXONFLOW_USAGE_FLUSH_SECONDS have passed
or AXONFLOW_USAGE_BATCH_SIZE entries are waiting, and per tenant, inside that tenant's
RLS context, in one transaction:

- bulk-inserts the UsageRecord rows;
- adds every attempt to its provider's MetricBucket for that minute (requests, errors,
  latency sum and histogram on routing/metrics.py's bounds, tokens, cost), creating the
  row or updating it under a row lock so several processes can share a minute.

The SQL is in routing/usage_store.py. A failed write keeps the entries for the next
round (bounded by MAX_PENDING); the ASGI shutdown hook and an atexit hook flush what is
left, so nothing is lost on a clean stop.
Prompt text is stored only for tenants with store_prompts.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from routing import usage_store
from routing.lifespan import on_shutdown, on_startup

if TYPE_CHECKING:
    from axonflow_site.errors import AxonFlowError
    from providers.adapters.base import CompletionRequest
    from routing.router import Attempt, Caller, RouteResult

log = logging.getLogger("axonflow.usage")

MAX_PENDING = 200_000
ZERO = Decimal("0")


@dataclass(slots=True)
class Entry:
    """One routed request, as it will become a UsageRecord (plus attempt metrics)."""

    tenant_id: int
    token_id: int | None
    provider_id: int | None
    provider_name: str
    attempts: list[dict[str, Any]]
    attempt_ids: list[int | None]
    status: str
    status_code: int
    error_code: str = ""
    model: str = ""
    stream: bool = False
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = ZERO
    request_id: str = ""
    prompt: str | None = None
    created: datetime = field(default_factory=timezone.now)


def prompt_text(request: CompletionRequest) -> str:
    parts = [f"system: {request.system}"] if request.system else []
    parts += [f"{m.role}: {m.content}" for m in request.messages]
    return "\n".join(parts)


def record_success(caller: Caller, request: CompletionRequest, result: RouteResult, *, stream: bool) -> None:
    usage = result.response.usage
    writer.add(
        Entry(
            caller.tenant_id,
            caller.token_id,
            result.config.pk,
            result.config.name,
            [a.as_dict() for a in result.attempts],
            [a.provider_id for a in result.attempts],
            "success",
            200,
            model=result.response.model,
            stream=stream,
            latency_ms=result.response_time_ms,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=result.cost,
            request_id=caller.request_id,
            prompt=prompt_text(request) if caller.store_prompts else None,
        )
    )


def record_failure(
    caller: Caller,
    request: CompletionRequest,
    error: AxonFlowError,
    attempts: list[Attempt],
    latency_ms: float,
    *,
    stream: bool,
    provider_id: int | None = None,
    provider_name: str = "",
) -> None:
    tried = [a for a in attempts if a.outcome != "rate_limited"]
    writer.add(
        Entry(
            caller.tenant_id,
            caller.token_id,
            provider_id if provider_id is not None else (tried[-1].provider_id if tried else None),
            provider_name or (tried[-1].provider if tried else ""),
            [a.as_dict() for a in attempts],
            [a.provider_id for a in attempts],
            "error",
            error.http_status,
            error_code=error.code,
            stream=stream,
            latency_ms=latency_ms,
            request_id=caller.request_id,
            prompt=prompt_text(request) if caller.store_prompts else None,
        )
    )


# --- writing (the SQL is in routing/usage_store.py) -----------------------------------------


def _write_retrying(tenant_id: int, entries: list[Entry], attempts: int = 5) -> None:
    """SQLite refuses a write at once (no busy wait) when a transaction that began by
    reading must upgrade after another connection wrote; a short retry is all it needs."""
    for attempt in range(attempts):
        try:
            usage_store.write_tenant(tenant_id, entries)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


class UsageWriter:
    """The queue and the thread that drains it (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: deque[Entry] = deque()
        self.autostart = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, entry: Entry) -> None:
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
            close_old_connections()
            try:
                self.flush()
            finally:
                close_old_connections()

    def flush(self) -> int:
        """Write everything queued now; returns the number of entries written.

        Entries of a tenant whose write fails go back to the queue."""
        with self._flush_lock:
            batch: list[Entry] = []
            while self.pending:
                batch.append(self.pending.popleft())
            by_tenant: dict[int, list[Entry]] = defaultdict(list)
            for entry in batch:
                by_tenant[entry.tenant_id].append(entry)
            written = 0
            for tenant_id, entries in by_tenant.items():
                try:
                    _write_retrying(tenant_id, entries)
                    written += len(entries)
                except Exception:
                    log.exception(
                        "usage write failed for tenant %s; %d records kept for retry", tenant_id, len(entries)
                    )
                    self._requeue(entries)
            return written

    def _requeue(self, entries: list[Entry]) -> None:
        room = MAX_PENDING - len(self.pending)
        if room < len(entries):
            log.error("usage queue full: dropping %d records", len(entries) - max(room, 0))
            entries = entries[: max(room, 0)]
        self.pending.extendleft(reversed(entries))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and flush what is left (shutdown)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            if not self.flush():
                break

    def discard(self) -> None:
        """Forget queued entries (tests, between cases)."""
        self.pending.clear()


writer = UsageWriter()


@on_startup
async def start_usage_writer() -> None:
    writer.start()


@on_shutdown
async def flush_usage() -> None:
    await sync_to_async(writer.stop, thread_sensitive=False)()


def _flush_at_exit() -> None:
    if writer.pending:
        try:
            writer.stop()
        except Exception:
            log.exception("usage flush at exit failed")


atexit.register(_flush_at_exit)
