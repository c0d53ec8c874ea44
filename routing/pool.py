"""SPEC §2 rule 0: the model a client asks for picks the pool of providers.

In order: a provider name → that provider; a model route name → its targets, each
with its own upstream model and weight; `auto` (or nothing, on /api/v1) → every
provider; otherwise a model name → every provider whose `model` or `models` include
it, sent that name. Anything else is `provider_not_found`, naming what was asked.

Resolution reads only the tenant snapshot (routing/cache.py), which keeps the routes
and the served-model index, and caches each Pool on it: the hot path resolves a name
with one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from axonflow_site.errors import ProviderNotFound

if TYPE_CHECKING:
    from routing.cache import TenantSnapshot

AUTO = "auto"
PROVIDER, ROUTE, ALL, MODEL = "provider", "route", "auto", "model"


@dataclass(frozen=True, slots=True)
class Member:
    """One provider of a pool: the upstream model to send it (None: the provider's own
    `model`) and the weight to draw it with (None: the provider's weight)."""

    model: str | None = None
    weight: float | None = None


@dataclass(frozen=True, slots=True)
class Pool:
    asked: str  # the name as the client gave it ("" when none)
    kind: str  # provider | route | auto | model
    members: dict[int, Member] | None  # by provider id; None: every provider as it is

    def describe(self) -> str:
        """The pool as the routing trace names it."""
        if self.kind == ALL:
            return "all providers"
        return f"{self.kind} '{self.asked}'"


EVERY = Pool("", ALL, None)


def resolve(snapshot: TenantSnapshot, name: str | None) -> Pool:
    """The pool for `name` (None or "" or `auto`: every provider). Raises ProviderNotFound."""
    if not name:
        return EVERY
    pool = snapshot.pools.get(name)
    if pool is None:
        pool = snapshot.pools[name] = _resolve(snapshot, name)
    return pool


def _resolve(snapshot: TenantSnapshot, name: str) -> Pool:
    config = snapshot.by_name.get(name)
    if config is not None:
        return Pool(name, PROVIDER, {config.pk: Member()})
    targets = snapshot.routes.get(name)
    if targets is not None:
        return Pool(name, ROUTE, {pk: Member(model, weight) for pk, model, weight in targets})
    if name == AUTO:
        return Pool(name, ALL, None)
    served = snapshot.served.get(name)
    if served:
        return Pool(name, MODEL, {pk: Member(name) for pk in served})
    raise ProviderNotFound(
        f"The model '{name}' is not a provider, model route or served model of this tenant, nor 'auto'.",
        {"param": "model", "field": "model", "name": name},
    )


def names(snapshot: TenantSnapshot) -> list[tuple[str, str]]:
    """(name, owner) of everything a client may ask for: `auto`, the model routes, the
    served models, the providers (enabled and licensed). For /v1/models."""
    usable = {c.pk for c in snapshot.configs if c.enabled and snapshot.licensed(c)}
    listed = [(AUTO, "axonflow")]
    listed += [(route, "axonflow") for route, targets in sorted(snapshot.routes.items())
               if any(pk in usable for pk, _, _ in targets)]  # fmt: skip
    by_id = {c.pk: c for c in snapshot.configs}
    listed += [(model, by_id[pks[0]].type) for model, pks in sorted(snapshot.served.items())
               if any(pk in usable for pk in pks)]  # fmt: skip
    listed += [(c.name, c.type) for c in snapshot.configs if c.pk in usable]
    seen: set[str] = set()
    return [(n, owner) for n, owner in listed if not (n in seen or seen.add(n))]
