"""The routing trace kept with each usage record (SPEC §2 rule 6): every provider of the
pool, what excluded it or the weight it was given, how the first attempt was drawn,
and the request's routing options. The attempts themselves are the record's own
`attempts`.

Built by the usage writer thread from the immutable pieces the router kept (the
snapshot's configs, the candidates, the options, the Draw), so the request path pays
nothing for it and no query is made. Answers "why did this request go to Bedrock?".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from routing.selection import Candidate, Draw, RoutingOptions, effective_weight

if TYPE_CHECKING:
    from providers.models import ProviderConfig

REASONS = {
    "disabled": "disabled",
    "license_required": "its type is not in the tenant's plan",
    "drained": "drained by an operator",
    "forced_unhealthy": "forced unhealthy by an operator",
    "rate_limited": "over its rate limit",
    "retry_after": "asked for quiet (Retry-After) that has not passed",
    "unhealthy": "unhealthy",
    "circuit_open": "circuit open (recent traffic failed)",
    "not_in_pool": "not in the pool of the model asked for",
}


def build(
    configs: Iterable[ProviderConfig],
    candidates: Iterable[Candidate],
    options: RoutingOptions,
    draw: Draw,
    rate_limited: Collection[int] = (),
    pool: str = "all providers",
    members: Collection[int] | None = None,
) -> dict[str, Any]:
    """`members`: the ids of the pool's providers (None: every provider). Runs on the
    usage writer thread for every record, so it reads each attribute once."""
    by_id = {c.id: c for c in candidates}
    rows = []
    for config in configs:
        pk = config.pk
        candidate = by_id.get(pk)
        if candidate is None:  # not a candidate at all: the snapshot lists only enabled ones
            candidate = Candidate(pk, config.name, config.priority, config.weight, config.health_status, False)
        if pk in rate_limited:
            candidate = Candidate(**{**_fields(candidate), "rate_limited": True})
        reason = "not_in_pool" if members is not None and pk not in members else candidate.exclusion
        if reason is None:
            why, weight_used = "", round(effective_weight(candidate, options), 4)
        else:
            why = f"cannot serve: {candidate.unable}" if reason == "unsupported" else REASONS.get(reason, "")
            weight_used = None
        rows.append(
            {
                "provider": candidate.name,
                "model": candidate.model or config.model,
                "priority": candidate.priority,
                "weight": candidate.weight,
                "weight_used": weight_used,
                "status": candidate.status,
                "operator_state": candidate.operator_state,
                "excluded": reason,
                "why": why,
            }
        )
    among = draw.among
    return {
        "pool": pool,
        "options": _options(options),
        "candidates": rows,
        "draw": {
            "method": draw.method,
            "among": [{"provider": name, "weight": round(weight, 4)} for name, weight in among],
            "total": round(sum(w for _, w in among), 4) if among else None,
            "point": None if draw.point is None else round(draw.point, 4),
            "chosen": draw.chosen,
        },
    }


def _fields(candidate: Candidate) -> dict[str, Any]:
    return {name: getattr(candidate, name) for name in Candidate.__slots__}


def _options(options: RoutingOptions) -> Mapping[str, Any]:
    return {
        "preferred_provider": options.preferred_provider,
        "weights": dict(options.weights),
        "disable_failover": options.disable_failover,
        "model": options.model,
    }
