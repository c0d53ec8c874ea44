"""The routing rules of SPEC §2 as a pure function: candidates and options in, the
order of attempts out. No I/O, no clock; randomness comes from the caller's Random.

Rules, in the order they apply:

1. Eligible: enabled, not `unhealthy`, circuit closed, not over its rate limit.
   `unknown` (never checked) counts as healthy; `degraded` keeps half its weight.
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

    @property
    def eligible(self) -> bool:
        return self.enabled and self.status != UNHEALTHY and not self.circuit_open and not self.rate_limited


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    preferred_provider: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    disable_failover: bool = False


def effective_weight(candidate: Candidate, options: RoutingOptions) -> float:
    """The candidate's weight for this request: override or default, halved if degraded."""
    weight = float(options.weights.get(candidate.name, candidate.weight))
    if candidate.status == DEGRADED:
        weight *= DEGRADED_FACTOR
    return max(weight, 0.0)


def weighted_draw(pool: Sequence[tuple[Candidate, float]], rng: random.Random) -> Candidate:
    """One candidate drawn with probability proportional to its (positive) weight."""
    total = sum(weight for _, weight in pool)
    point = rng.random() * total
    for candidate, weight in pool:
        point -= weight
        if point < 0:
            return candidate
    return pool[-1][0]  # float rounding at the very top of the range


def failover_order(pool: Iterable[tuple[Candidate, float]]) -> list[Candidate]:
    """Priority (high first), then effective weight (high first), then name."""
    return [c for c, w in sorted(pool, key=lambda cw: (-cw[0].priority, -cw[1], cw[0].name))]


def first_choice(
    pool: Sequence[tuple[Candidate, float]], options: RoutingOptions, rng: random.Random
) -> Candidate | None:
    """The first attempt: the preferred provider, else a weighted draw in the top priority."""
    if options.preferred_provider:
        for candidate, _ in pool:
            if candidate.name == options.preferred_provider:
                return candidate
    weighted = [(c, w) for c, w in pool if w > 0]
    if not weighted:
        standbys = failover_order(pool)
        return standbys[0] if standbys else None
    top = max(c.priority for c, _ in weighted)
    return weighted_draw([(c, w) for c, w in weighted if c.priority == top], rng)


def attempts(
    candidates: Iterable[Candidate], options: RoutingOptions, rng: random.Random | None = None
) -> Iterator[Candidate]:
    """Yield the providers to try, in order (nothing when none is eligible). The failover
    order is computed only if the consumer asks for a second provider."""
    rng = rng or random.Random()
    pool = [(c, effective_weight(c, options)) for c in candidates if c.eligible]
    first = first_choice(pool, options, rng)
    if first is None:
        return
    yield first
    if not options.disable_failover:
        yield from failover_order((c, w) for c, w in pool if c is not first)


def attempt_order(
    candidates: Iterable[Candidate], options: RoutingOptions, rng: random.Random | None = None
) -> list[Candidate]:
    """The providers to try, in order; empty when none is eligible."""
    return list(attempts(candidates, options, rng))
