"""The fake upstream's failure kinds (Behaviour.failure_kind, described in core.py) and
the wire-independent parts of the ones that need a wire module's help:

- ``missing_fields`` drops the wire module's ``REQUIRED_FIELDS`` (the top-level keys a
  client cannot do without) from a JSON body and from every stream event;
- ``no_end`` drops the events the module's ``is_end(event, data)`` calls the stream's
  end marker, and the stream then ends cleanly;
- ``reset`` closes the TCP connection with a reset, the request read and nothing sent.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from aiohttp import web

# Applied by the response helpers (respond.py), so handlers only describe the happy path.
BODY_FAILURES = (
    "malformed", "cut", "stall", "drip", "stream_error", "stream_echo_key", "missing_fields", "no_end",
)  # fmt: skip
# Answered by core.inject before the handler runs.
CENTRAL_FAILURES = ("timeout", "reset", "echo_key", "echo_request")
# An HTTP status as a failure: redirects and errors (a 2xx is not a failure).
STATUS_RANGE = range(300, 600)
Event = tuple[str | None, Any]


def check_kind(kind: str) -> str:
    """`kind` when it is a failure kind: a status in STATUS_RANGE, or one of the named
    kinds. Raises ValueError naming the known kinds otherwise."""
    if kind.isdigit() and len(kind) == 3 and int(kind) in STATUS_RANGE:
        return kind
    if kind in BODY_FAILURES or kind in CENTRAL_FAILURES:
        return kind
    known = ", ".join(("<status 300-599>", *CENTRAL_FAILURES, *BODY_FAILURES))
    raise ValueError(f"unknown failure_kind {kind!r} (known: {known})")


def without_fields(obj: Any, module: ModuleType | None) -> Any:
    """`obj` without the module's REQUIRED_FIELDS: a dict shallow-copied without them, a
    list (Gemini's JSON-array stream) element by element, anything else ([DONE]) as is."""
    names = getattr(module, "REQUIRED_FIELDS", frozenset())
    if isinstance(obj, dict):
        return {key: value for key, value in obj.items() if key not in names}
    if isinstance(obj, list):
        return [without_fields(item, module) for item in obj]
    return obj


def damage(failure: str | None, events: Iterable[Event], module: ModuleType | None) -> list[Event]:
    """`events` ((event name, data) pairs) as the body-level `failure` leaves them:
    fields dropped (missing_fields), the end marker dropped (no_end), else unchanged."""
    events = list(events)
    if failure == "missing_fields":
        return [(name, without_fields(data, module)) for name, data in events]
    if failure == "no_end":
        is_end = getattr(module, "is_end", None)
        return [(name, data) for name, data in events if not (is_end and is_end(name, data))]
    return events


def reset(http: web.Request) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0, then abort), so the client
    sees ECONNRESET or a server disconnect and no response at all."""
    transport = http.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # a plain close still ends the connection without a response
    transport.abort()
