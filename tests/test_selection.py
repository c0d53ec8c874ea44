"""Property tests of the routing rules (SPEC §2) on the pure selection module."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from scipy.stats import chisquare

from routing.selection import Candidate, RoutingOptions, attempt_order

DRAWS = 20_000
STATUSES = ["healthy", "degraded", "unhealthy", "unknown"]


def cand(id_, name, **kw) -> Candidate:
    return Candidate(id=id_, name=name, **kw)


def first_counts(candidates, options=RoutingOptions(), draws=DRAWS, seed=1) -> Counter:
    rng = random.Random(seed)
    return Counter(attempt_order(candidates, options, rng)[0].name for _ in range(draws))


def assert_shares_match(counts: Counter, weights: dict[str, float]) -> None:
    total_weight = sum(weights.values())
    names = sorted(weights)
    observed = [counts[n] for n in names]
    expected = [sum(observed) * weights[n] / total_weight for n in names]
    assert chisquare(observed, expected).pvalue > 0.001, (observed, expected)


def random_candidates(rng: random.Random) -> list[Candidate]:
    return [
        cand(
            i,
            f"p{i}",
            priority=rng.choice([0, 0, 1, 5]),
            weight=rng.choice([0, 0, 1, 10, 50, 100]),
            status=rng.choice(STATUSES),
            enabled=rng.random() > 0.15,
            circuit_open=rng.random() < 0.1,
            rate_limited=rng.random() < 0.1,
        )
        for i in range(rng.randint(0, 6))
    ]


def test_shares_of_first_attempts_match_the_weights():
    candidates = [cand(1, "a", weight=50), cand(2, "b", weight=30), cand(3, "c", weight=20)]
    assert_shares_match(first_counts(candidates), {"a": 50, "b": 30, "c": 20})


def test_request_weights_override_the_defaults():
    candidates = [cand(1, "a", weight=50), cand(2, "b", weight=50), cand(3, "c", weight=50)]
    options = RoutingOptions(weights={"a": 10, "b": 70})
    assert_shares_match(first_counts(candidates, options), {"a": 10, "b": 70, "c": 50})


def test_degraded_providers_are_drawn_at_half_weight():
    candidates = [cand(1, "a", weight=50, status="degraded"), cand(2, "b", weight=50, status="healthy")]
    assert_shares_match(first_counts(candidates), {"a": 25, "b": 50})


def test_unknown_is_routed_like_healthy():
    candidates = [cand(1, "a", weight=50, status="unknown"), cand(2, "b", weight=50, status="healthy")]
    assert_shares_match(first_counts(candidates), {"a": 50, "b": 50})


def test_a_weight_zero_provider_is_never_first():
    candidates = [cand(1, "zero", weight=0), cand(2, "a", weight=1), cand(3, "b", weight=99)]
    counts = first_counts(candidates)
    assert counts["zero"] == 0
    assert counts["a"] > 0


def test_a_request_weight_of_zero_keeps_a_provider_from_being_first():
    candidates = [cand(1, "a", weight=50), cand(2, "b", weight=50)]
    assert first_counts(candidates, RoutingOptions(weights={"a": 0}), draws=2000) == {"b": 2000}


def test_standbys_take_over_when_no_weighted_provider_is_eligible():
    candidates = [cand(1, "main", weight=100, status="unhealthy"), cand(2, "standby", weight=0)]
    assert [c.name for c in attempt_order(candidates, RoutingOptions())] == ["standby"]


def test_higher_priority_wins_over_weight():
    candidates = [cand(1, "low", priority=0, weight=100), cand(2, "high", priority=1, weight=1)]
    assert first_counts(candidates, draws=2000) == {"high": 2000}


def test_priority_tier_without_positive_weight_does_not_block_the_draw():
    candidates = [cand(1, "standby", priority=9, weight=0), cand(2, "a", priority=0, weight=10)]
    order = attempt_order(candidates, RoutingOptions())
    assert [c.name for c in order] == ["a", "standby"]


def test_the_preferred_provider_is_first_when_healthy():
    candidates = [cand(1, "a", priority=5, weight=100), cand(2, "pref", weight=0), cand(3, "c")]
    options = RoutingOptions(preferred_provider="pref")
    assert first_counts(candidates, options, draws=1000) == {"pref": 1000}


def test_an_unhealthy_preferred_provider_is_skipped():
    candidates = [cand(1, "a"), cand(2, "pref", status="unhealthy")]
    order = attempt_order(candidates, RoutingOptions(preferred_provider="pref"))
    assert [c.name for c in order] == ["a"]


def test_failover_order_is_priority_then_weight():
    candidates = [
        cand(1, "first", priority=10, weight=5),
        cand(2, "p1w10", priority=1, weight=10),
        cand(3, "p1w90", priority=1, weight=90),
        cand(4, "p0w100", priority=0, weight=100),
        cand(5, "p2w0", priority=2, weight=0),
    ]
    order = attempt_order(candidates, RoutingOptions(), random.Random(3))
    assert [c.name for c in order] == ["first", "p2w0", "p1w90", "p1w10", "p0w100"]


def test_disable_failover_stops_after_one_attempt():
    candidates = [cand(i, f"p{i}") for i in range(5)]
    for seed in range(50):
        order = attempt_order(candidates, RoutingOptions(disable_failover=True), random.Random(seed))
        assert len(order) == 1


@pytest.mark.parametrize(
    "excluded",
    [
        {"status": "unhealthy"},
        {"enabled": False},
        {"circuit_open": True},
        {"rate_limited": True},
    ],
)
def test_an_ineligible_provider_is_never_tried(excluded):
    candidates = [cand(1, "bad", weight=100, priority=9, **excluded), cand(2, "ok", weight=1)]
    options = RoutingOptions(preferred_provider="bad", weights={"bad": 100})
    for seed in range(200):
        assert [c.name for c in attempt_order(candidates, options, random.Random(seed))] == ["ok"]


def test_nothing_eligible_gives_an_empty_order():
    candidates = [cand(1, "a", status="unhealthy"), cand(2, "b", enabled=False)]
    assert attempt_order(candidates, RoutingOptions()) == []


def test_invariants_hold_for_random_configurations():
    """Each provider at most once; only eligible ones; first is weighted unless preferred
    or no weighted provider exists; the tail is in priority-then-weight order."""
    rng = random.Random(42)
    for _ in range(3000):
        candidates = random_candidates(rng)
        preferred = rng.choice([None, *[c.name for c in candidates]])
        options = RoutingOptions(preferred_provider=preferred, disable_failover=rng.random() < 0.2)
        order = attempt_order(candidates, options, rng)
        names = [c.name for c in order]
        eligible = [c for c in candidates if c.eligible]
        assert len(names) == len(set(names))
        assert all(c.eligible for c in order)
        if not eligible:
            assert order == []
            continue
        assert len(order) == (1 if options.disable_failover else len(eligible))
        first = order[0]
        weighted = [c for c in eligible if c.weight > 0]
        if preferred and any(c.name == preferred for c in eligible):
            assert first.name == preferred
        elif weighted:
            assert first.weight > 0
            assert first.priority == max(c.priority for c in weighted)
        keys = [(-c.priority, -(c.weight * (0.5 if c.status == "degraded" else 1)), c.name) for c in order[1:]]
        assert keys == sorted(keys)


# --- operator states (SPEC §2 rule 1: they override derived health) -------------------------


def test_a_drained_provider_is_never_tried():
    pool = [cand(1, "a", operator_state="drained"), cand(2, "b")]
    assert [c.name for c in attempt_order(pool, RoutingOptions(preferred_provider="a"))] == ["b"]


def test_a_provider_forced_unhealthy_is_never_tried_even_when_healthy():
    pool = [cand(1, "a", status="healthy", operator_state="forced_unhealthy"), cand(2, "b", status="degraded")]
    assert [c.name for c in attempt_order(pool, RoutingOptions())] == ["b"]


def test_a_provider_forced_healthy_is_tried_though_unhealthy_with_its_circuit_open():
    pool = [cand(1, "a", status="unhealthy", circuit_open=True, operator_state="forced_healthy")]
    assert [c.name for c in attempt_order(pool, RoutingOptions())] == ["a"]


def test_forced_healthy_keeps_a_degraded_providers_full_weight():
    pool = [cand(1, "a", weight=50, status="degraded", operator_state="forced_healthy"), cand(2, "b", weight=50)]
    assert_shares_match(first_counts(pool), {"a": 50, "b": 50})


def test_forced_healthy_does_not_override_disabled_or_a_rate_limit():
    pool = [
        cand(1, "off", enabled=False, operator_state="forced_healthy"),
        cand(2, "busy", rate_limited=True, operator_state="forced_healthy"),
    ]
    assert attempt_order(pool, RoutingOptions()) == []


def test_the_draw_records_how_the_first_attempt_was_chosen():
    from routing.selection import Draw, attempts

    pool = [cand(1, "a", weight=30), cand(2, "b", weight=10, status="degraded"), cand(3, "c", status="unhealthy")]
    draw = Draw()
    first = next(attempts(pool, RoutingOptions(), random.Random(3), draw))
    assert (draw.method, draw.among, draw.chosen) == ("weighted", [("a", 30.0), ("b", 5.0)], first.name)
    assert 0 <= draw.point < 35
    draw = Draw()
    next(attempts(pool, RoutingOptions(preferred_provider="b"), random.Random(3), draw))
    assert (draw.method, draw.chosen) == ("preferred", "b")
