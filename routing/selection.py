"""The routing rules of SPEC §2 as a pure function: candidates and options in, the
order of attempts out. No I/O, no clock; randomness comes from the caller's Random.

Rules, in the order they apply:

0. The pool (routing/pool.py) has already narrowed the candidates to the providers
   the requested model names, each with the upstream model to send and its weight.
1. Eligible: enabled, licensed (its type in the tenant's plan), able to serve the
   request (its adapter declares every feature the request needs), not drained or forced
   unhealthy by an operator, not over its rate limit, and (unless an operator forced it
   healthy) not `unhealthy` with its circuit closed. `unknown` (never checked) counts as
   healthy; `degraded` keeps half its weight. Operator states override derived health
   (SPEC §2 rule 1).
2. `preferred_provider`, when eligible, is first (whatever its weight).
3. Otherwise the first attempt is drawn at random in proportion to weight among the
   eligible providers of the highest priority that has any positive weight. Request
   `weights` override the defaults name by name; unnamed providers keep theirs.
   A provider weighted 0 is a standby: it is never drawn, and is tried only after the
   drawn provider (failover) or when no eligible provider has a positive weight
   (the standbys take over, in failover order, rather than the request failing).
4. Failover: the remaining eligible providers by priority (high first), then
   effective weight (high first), then name, each provider at most once.
5. `disable_failover`: only the first attempt.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = "healthy", "degraded", "unhealthy", "unknown"
DRAINED, FORCED_UNHEALTHY, FORCED_HEALTHY = "drained", "forced_unhealthy", "forced_healthy"
DEGRADED_FACTOR = 0.5


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider as the router sees it at the moment of the request."""

    id: int
    name: str
    priority: int = 0
    weight: float = 50
    status: str = UNKNOWN
    enabled: bool = True
    circuit_open: bool = False
    rate_limited: bool = False
    operator_state: str = ""  # in force now ("" when none or expired)
    licensed: bool = True  # the tenant's plan covers the provider's type (a downgrade ends it)
    model: str | None = None  # the upstream model to send (None: the provider's own)
    unable: str = ""  # features the request needs that the adapter lacks, comma-separated
    cooling: bool = False  # it answered with a Retry-After that has not passed (routing/retry.py)

    @property
    def exclusion(self) -> str | None:
        """Why this provider cannot be tried (the routing trace shows it), or None."""
        if not self.enabled:
            return "disabled"
        if not self.licensed:
            return "license_required"
        if self.unable:
            return "unsupported"
        if self.operator_state == DRAINED:
            return "drained"
        if self.operator_state == FORCED_UNHEALTHY:
            return "forced_unhealthy"
        if self.rate_limited:
            return "rate_limited"
        if self.cooling:
            return "retry_after"
        if self.operator_state == FORCED_HEALTHY:
            return None
        if self.status == UNHEALTHY:
            return "unhealthy"
        if self.circuit_open:
            return "circuit_open"
        return None

    @property
    def eligible(self) -> bool:
        return self.exclusion is None


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    preferred_provider: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    disable_failover: bool = False
    model: str | None = None  # the model asked for: picks the pool (routing/pool.py)


def effective_weight(candidate: Candidate, options: RoutingOptions) -> float:
    """The candidate's weight for this request: override or default, halved if degraded."""
    weight = float(options.weights.get(candidate.name, candidate.weight))
    if candidate.status == DEGRADED and candidate.operator_state != FORCED_HEALTHY:
        weight *= DEGRADED_FACTOR
    return max(weight, 0.0)


@dataclass(slots=True)
class Draw:
    """How the first attempt was chosen, for the routing trace (filled by first_choice)."""

    method: str = "none"  # preferred | weighted | standby | none
    among: list[tuple[str, float]] = field(default_factory=list)  # (name, effective weight)
    point: float | None = None  # where the draw landed in [0, total)
    chosen: str | None = None


def weighted_draw(pool: Sequence[tuple[Candidate, float]], rng: random.Random, draw: Draw | None = None) -> Candidate:
    """One candidate drawn with probability proportional to its (positive) weight."""
    total = sum(weight for _, weight in pool)
    point = rng.random() * total
    if draw is not None:
        draw.method, draw.among, draw.point = "weighted", [(c.name, w) for c, w in pool], point
    for candidate, weight in pool:
        point -= weight
        if point < 0:
            return candidate
    return pool[-1][0]  # float rounding at the very top of the range


def failover_order(pool: Iterable[tuple[Candidate, float]]) -> list[Candidate]:
    """Priority (high first), then effective weight (high first), then name."""
    return [c for c, w in sorted(pool, key=lambda cw: (-cw[0].priority, -cw[1], cw[0].name))]


def first_choice(
    pool: Sequence[tuple[Candidate, float]], options: RoutingOptions, rng: random.Random, draw: Draw | None = None
) -> Candidate | None:
    """The first attempt: the preferred provider, else a weighted draw in the top priority.
    `draw`, when given, records how."""
    chosen = _first_choice(pool, options, rng, draw)
    if draw is not None:
        draw.chosen = chosen.name if chosen is not None else None
    return chosen


def _first_choice(
    pool: Sequence[tuple[Candidate, float]], options: RoutingOptions, rng: random.Random, draw: Draw | None
) -> Candidate | None:
    if options.preferred_provider:
        for candidate, _ in pool:
            if candidate.name == options.preferred_provider:
                if draw is not None:
                    draw.method = "preferred"
                return candidate
    if len(pool) == 1 and pool[0][1] > 0:  # one provider (a provider's name asked for): no draw to make
        return weighted_draw(pool, rng, draw)
    weighted = [(c, w) for c, w in pool if w > 0]
    if not weighted:
        standbys = failover_order(pool)
        if draw is not None:
            draw.method = "standby" if standbys else "none"
        return standbys[0] if standbys else None
    top = max(c.priority for c, _ in weighted)
    return weighted_draw([(c, w) for c, w in weighted if c.priority == top], rng, draw)


def attempts(
    candidates: Iterable[Candidate], options: RoutingOptions, rng: random.Random | None = None, draw: Draw | None = None
) -> Iterator[Candidate]:
    """Yield the providers to try, in order (nothing when none is eligible). The failover
    order is computed only if the consumer asks for a second provider."""
    rng = rng or random.Random()
    pool = [(c, effective_weight(c, options)) for c in candidates if c.eligible]
    first = first_choice(pool, options, rng, draw)
    if first is None:
        return
    yield first
    if not options.disable_failover and len(pool) > 1:
        yield from failover_order((c, w) for c, w in pool if c is not first)


def attempt_order(
    candidates: Iterable[Candidate], options: RoutingOptions, rng: random.Random | None = None
) -> list[Candidate]:
    """The providers to try, in order; empty when none is eligible."""
    return list(attempts(candidates, options, rng))
