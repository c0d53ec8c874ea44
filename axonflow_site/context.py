"""The request being served, as log lines and spans see it: its id, tenant and provider.

`begin(scope)` at the start of every HTTP request (axonflow_site/mount.py, and
routing/v1/app.py for /v1) takes the client's X-Request-ID when it is well formed (1–64
characters of letters, digits and `._:-`, as the usage record's column holds), else
makes one, and puts a RequestContext in a contextvar; the layers fill in the tenant and
provider as they learn them. The id goes back in the response's X-Request-ID header
and into the usage record and the trace. `RequestFields`, a logging filter, copies the
three onto every log record, so a JSON log line (LOG_FORMAT=json) carries them;
uvicorn's access line is written inside the request's task and carries them too.

Imports nothing of ours: settings' LOGGING names the filter before apps load.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from contextvars import ContextVar

_PREFIX = secrets.token_hex(6)
_numbers = itertools.count(1)
WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
HEADER = b"x-request-id"


class RequestContext:
    __slots__ = ("request_id", "tenant", "provider")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.tenant = ""  # the tenant's slug, once the caller is known
        self.provider = ""  # the provider that answered (or was tried last)


current: ContextVar[RequestContext | None] = ContextVar("axonflow_request", default=None)


def new_request_id() -> str:
    """Unique per process start and request; cheaper than uuid4 (no syscall)."""
    return f"{_PREFIX}{next(_numbers):012x}"


def request_id_from(value: str | None) -> str:
    """The client's id when it is well formed, else a new one."""
    if value is not None and WELL_FORMED.fullmatch(value):
        return value
    return new_request_id()


def begin(scope) -> RequestContext:
    """The context of the HTTP request `scope` describes, made current for its task."""
    given = None
    for key, value in scope["headers"]:
        if key == HEADER:
            given = value.decode("latin-1")
            break
    context = RequestContext(request_id_from(given))
    current.set(context)
    return context


def set_tenant(slug: str) -> None:
    context = current.get()
    if context is not None:
        context.tenant = slug


def set_provider(name: str) -> None:
    context = current.get()
    if context is not None:
        context.provider = name


class RequestFields(logging.Filter):
    """Adds request_id, tenant and provider to every record (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current.get()
        if context is None:
            record.request_id = record.tenant = record.provider = ""
        else:
            record.request_id, record.tenant, record.provider = context.request_id, context.tenant, context.provider
        return True


def request_id() -> str:
    """The id of the request being served (a new one outside any)."""
    context = current.get()
    return context.request_id if context is not None else new_request_id()
