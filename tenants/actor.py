"""Who is acting: the actor of the current context, for the audit log and operator
states (tenants/audit.py). No models here, so manage.py can set the default before
Django is set up.

The console's middleware acts as the session user, the REST API as the token, and
`manage.py` sets the command as the process's default actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

Actor = tuple[str, str]  # (ActorKind, name)

_actor: ContextVar[Actor | None] = ContextVar("axonflow_actor", default=None)
_default: Actor = ("system", "system")


def set_default_actor(kind: str, name: str) -> None:
    """The actor of this process when no request is being served (manage.py sets it)."""
    global _default
    _default = (kind, name[:200])


def current_actor() -> Actor:
    return _actor.get() or _default


@contextlib.contextmanager
def acting_as(kind: str, name: str) -> Iterator[None]:
    """Attribute the changes made inside the block to this actor."""
    token = _actor.set((kind, name[:200]))
    try:
        yield
    finally:
        _actor.reset(token)


def act_as(kind: str, name: str) -> None:
    """Name the actor for the rest of the enclosing `acting_as` block (an API view
    learns its token only once the block has begun)."""
    _actor.set((kind, name[:200]))


def actor_label() -> str:
    """"alice", "ci-bot (axf_Ab12Cd34)": how the current actor is shown (operator_by)."""
    return current_actor()[1]
