"""Which of the tenant's providers may serve a request (SPEC §2 rules 0 and 1): the pool
the model asked for picks, as selection Candidates with their health, circuit state,
Retry-After quiet, upstream model and the features they lack. Built once per snapshot,
pool and feature set; the live states are applied per request."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from axonflow_site.errors import ValidationFailed
from providers.adapters.base import CHAT
from providers.adapters.chat import FEATURE_LABELS
from routing import pool as pools
from routing import retry
from routing.health import breaker
from routing.selection import Candidate, RoutingOptions

if TYPE_CHECKING:
    from routing.cache import TenantSnapshot

CHAT_ONLY = frozenset({CHAT})


class UnsupportedFeature(ValidationFailed):
    """No provider of the pool can serve a feature the request needs (SPEC §2 rule 1)."""


def candidates_of(
    snapshot: TenantSnapshot, pool: pools.Pool = pools.EVERY, needs: frozenset[str] = CHAT_ONLY
) -> list[Candidate]:
    """The pool's enabled providers as selection candidates for a request needing
    `needs`, with the circuit state of this moment (the rest is built once per snapshot,
    pool and needs)."""
    key = (pool.asked, needs)
    base = snapshot.pool_candidates.get(key)
    if base is None:
        base = snapshot.pool_candidates[key] = _pool_candidates(snapshot, pool, needs)
    if retry.cooling:  # some provider asked for quiet (Retry-After): skip it until then
        now = retry.clock()
        base = [replace(c, cooling=True) if retry.cooling_for(c.id, now) else c for c in base]
    return [replace(c, circuit_open=True) if breaker.is_circuit_open(c.id) else c for c in base]


def _pool_candidates(snapshot: TenantSnapshot, pool: pools.Pool, needs: frozenset[str]) -> list[Candidate]:
    by_id = {c.pk: c for c in snapshot.configs}
    chosen = []
    for candidate in _all_candidates(snapshot):
        member = pools.Member() if pool.members is None else pool.members.get(candidate.id)
        if member is None:
            continue
        features = snapshot.features(by_id[candidate.id])
        missing = sorted(needs - features) if features is not None else []
        if member.model is not None or member.weight is not None or missing:
            candidate = replace(
                candidate,
                model=member.model,
                weight=candidate.weight if member.weight is None else member.weight,
                unable=", ".join(missing),
            )
        chosen.append(candidate)
    return chosen


def _all_candidates(snapshot: TenantSnapshot) -> list[Candidate]:
    base = snapshot.candidates
    if base is None:
        # Operator states as of the snapshot's load: the snapshot expires when one of
        # them does (routing/cache.py), so an expired drain never outlives it.
        base = snapshot.candidates = [
            Candidate(
                id=c.pk,
                name=c.name,
                priority=c.priority,
                weight=c.weight,
                status=c.health_status,
                operator_state=c.operator_state_at(snapshot.loaded_at),
                licensed=snapshot.licensed(c),
            )
            for c in snapshot.configs
            if c.enabled
        ]
    return base


def check_features(candidates: list[Candidate], needs: frozenset[str]) -> None:
    """Raise UnsupportedFeature when the pool has providers and none of them can serve
    the request: a 400 naming the feature, before anything is sent upstream."""
    if not candidates or any(not c.unable for c in candidates):
        return
    missing = set.intersection(*(set(c.unable.split(", ")) for c in candidates)) or {
        f for c in candidates for f in c.unable.split(", ")
    }
    labels = [FEATURE_LABELS.get(f, f) for f in sorted(missing)]
    raise UnsupportedFeature(
        f"No provider for this model can serve {' and '.join(labels)}.",
        {"param": None, "features": sorted(missing), "providers": [c.name for c in candidates]},
    )


def validate_names(snapshot: TenantSnapshot, options: RoutingOptions) -> None:
    """Raise ValidationFailed if the options name a provider the tenant does not have
    (another tenant's provider is as unknown as a missing one)."""
    named = ([options.preferred_provider] if options.preferred_provider else []) + list(options.weights)
    unknown = sorted({name for name in named if name not in snapshot.by_name})
    if unknown:
        field_name = "preferred_provider" if options.preferred_provider in unknown else "weights"
        raise ValidationFailed(
            f"Unknown provider name(s): {', '.join(unknown)}.",
            {"field": field_name, "param": field_name, "names": unknown},
        )
