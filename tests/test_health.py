"""routing/health/status.py (hysteresis, pure) and routing/health/breaker.py (the traffic circuit breaker)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from providers.models import HealthResult, ProviderConfig
from routing.health import breaker, db_thread
from routing.health.status import (
    DEFAULT_THRESHOLDS,
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    UNKNOWN,
    Thresholds,
    derive_status,
    observe,
    parse_thresholds,
    status_sequence,
)
from tests.fixtures_gateway import gateway  # noqa: F401  (fixture)

OK, SLOW, FAIL = HEALTHY, DEGRADED, UNHEALTHY


# --- hysteresis -------------------------------------------------------------------------------


def test_a_never_checked_provider_is_unknown():
    assert derive_status([]) == UNKNOWN


def test_healthy_failing_recovered_gives_the_exact_sequence():
    outcomes = [OK, OK, FAIL, FAIL, FAIL, FAIL, OK, OK, OK]
    assert status_sequence(outcomes) == [
        HEALTHY, HEALTHY, DEGRADED, DEGRADED, UNHEALTHY, UNHEALTHY, UNHEALTHY, HEALTHY, HEALTHY,
    ]  # fmt: skip


def test_a_single_failure_gives_degraded_and_two_successes_bring_it_back():
    assert status_sequence([OK, FAIL, OK, OK]) == [HEALTHY, DEGRADED, DEGRADED, HEALTHY]


def test_a_slow_probe_gives_degraded():
    assert status_sequence([OK, SLOW, SLOW, OK, OK]) == [HEALTHY, DEGRADED, DEGRADED, DEGRADED, HEALTHY]


def test_alternating_outcomes_do_not_flap_from_healthy():
    statuses = status_sequence([OK] + [FAIL, OK] * 6)
    assert statuses[0] == HEALTHY
    assert set(statuses[1:]) == {DEGRADED}


def test_alternating_outcomes_do_not_flap_from_unhealthy():
    statuses = status_sequence([FAIL, FAIL, FAIL] + [OK, FAIL] * 6)
    assert set(statuses[2:]) == {UNHEALTHY}


def test_leaving_unhealthy_slowly_gives_degraded_not_healthy():
    assert status_sequence([FAIL, FAIL, FAIL, SLOW, SLOW, OK, OK])[-4:] == [UNHEALTHY, DEGRADED, DEGRADED, HEALTHY]


def test_two_failures_in_a_row_are_not_yet_unhealthy():
    assert derive_status([OK, FAIL, FAIL]) == DEGRADED


def test_one_step_from_the_stored_status_agrees_with_a_full_replay():
    outcomes = [OK, FAIL, FAIL, OK, FAIL, FAIL, FAIL, OK, SLOW, OK, OK, FAIL, OK]
    current = UNKNOWN
    for i in range(len(outcomes)):
        recent = outcomes[max(0, i - 3) : i + 1]  # only a short tail, as the monitor reads it
        current = derive_status(recent, DEFAULT_THRESHOLDS, current=current)
        assert current == derive_status(outcomes[: i + 1])


def test_thresholds_change_the_sequence():
    strict = Thresholds(failures_to_unhealthy=1, successes_to_healthy=3)
    assert status_sequence([OK, FAIL, OK, OK, OK], strict) == [HEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, HEALTHY]


def test_observe_classifies_by_outcome_and_latency():
    t = Thresholds(slow_ms=500)
    assert observe(True, 20, t) == HEALTHY
    assert observe(True, 501, t) == DEGRADED
    assert observe(False, 5, t) == UNHEALTHY


# --- per-tenant thresholds ----------------------------------------------------------------------


def test_tenant_settings_override_the_defaults():
    t = parse_thresholds({"slow_ms": 250, "failures_to_unhealthy": 5, "traffic_error_rate": 0.8})
    assert (t.slow_ms, t.failures_to_unhealthy, t.traffic_error_rate) == (250.0, 5, 0.8)
    assert t.successes_to_healthy == DEFAULT_THRESHOLDS.successes_to_healthy


@pytest.mark.parametrize(
    "data",
    [
        {"slow_msec": 100},
        {"slow_ms": "fast"},
        {"slow_ms": True},
        {"slow_ms": -1},
        {"failures_to_unhealthy": 0},
        {"failures_to_unhealthy": 2.5},
        {"traffic_error_rate": 1.5},
        {"traffic_sample_size": 5},
        ["slow_ms", 100],
    ],
)
def test_it_rejects_bad_health_settings(data):
    with pytest.raises(ValueError):
        parse_thresholds(data)


def test_a_tenant_with_bad_settings_gets_the_defaults(acme, caplog):
    acme.health_settings = {"slow_ms": "fast"}
    assert breaker.thresholds_for(acme) == DEFAULT_THRESHOLDS
    assert "ignoring health_settings" in caplog.text


# --- circuit breaker ----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_breaker(monkeypatch, circuit_changes):
    """The breaker on a fake clock, with circuit changes captured instead of written."""
    clock = Clock()
    breaker.reset()
    monkeypatch.setattr(breaker, "clock", clock)
    breaker.remember_thresholds(1, DEFAULT_THRESHOLDS)
    yield clock, circuit_changes
    breaker.reset()


def attempts(outcomes, provider=7, clock=None, spacing=0.1):
    for ok in outcomes:
        breaker.record_attempt(1, provider, ok, 12.0, "" if ok else "HTTP 500")
        if clock is not None:
            clock.now += spacing


def test_ten_failures_open_the_circuit_at_once(fake_breaker):
    clock, changes = fake_breaker
    attempts([False] * 9, clock=clock)
    assert not breaker.is_circuit_open(7)
    attempts([False], clock=clock)
    assert breaker.is_circuit_open(7)
    assert changes == [(7, True)]


def test_a_failing_provider_with_a_good_history_is_cut_off_within_ten_requests(fake_breaker):
    clock, changes = fake_breaker
    attempts([True] * 50, clock=clock)
    sent = 0
    while not breaker.is_circuit_open(7):
        attempts([False], clock=clock)
        sent += 1
        assert sent <= 10
    assert changes == [(7, True)]


def test_a_receiver_that_raises_never_fails_the_request_that_opened_the_circuit(fake_breaker, caplog):
    from axonflow_site import events

    def broken(sender, **kwargs):
        raise RuntimeError("board is down")

    events.circuit_changed.connect(broken, weak=False, dispatch_uid="test-broken-receiver")
    try:
        attempts([False] * 10)  # raises nothing
    finally:
        events.circuit_changed.disconnect(dispatch_uid="test-broken-receiver")
    assert breaker.is_circuit_open(7)
    assert "circuit change receiver" in caplog.text and "board is down" in caplog.text


def test_half_the_requests_failing_opens_the_circuit(fake_breaker):
    clock, _ = fake_breaker
    attempts([True, False] * 5, clock=clock)
    assert breaker.is_circuit_open(7)


def test_occasional_errors_keep_the_circuit_closed(fake_breaker):
    clock, changes = fake_breaker
    attempts([True, True, True, False] * 50, clock=clock)
    assert not breaker.is_circuit_open(7)
    assert changes == []


def test_fewer_than_ten_requests_in_a_minute_never_open_it(fake_breaker):
    clock, changes = fake_breaker
    attempts([False] * 30, clock=clock, spacing=7.0)  # one every 7 s: at most 9 in 60 s
    assert not breaker.is_circuit_open(7)
    assert changes == []


def test_circuits_are_per_provider(fake_breaker):
    clock, _ = fake_breaker
    attempts([False] * 10, provider=7, clock=clock)
    attempts([True] * 10, provider=8, clock=clock)
    assert breaker.is_circuit_open(7)
    assert not breaker.is_circuit_open(8)


def test_after_the_cooldown_a_successful_trial_closes_it(fake_breaker):
    clock, changes = fake_breaker
    attempts([False] * 10, clock=clock)
    attempts([False, False], clock=clock)  # in flight when it opened: ignored
    clock.now += DEFAULT_THRESHOLDS.circuit_cooldown_seconds
    assert not breaker.is_circuit_open(7)  # half-open
    attempts([True], clock=clock)
    assert changes == [(7, True), (7, False)]
    attempts([False] * 9, clock=clock)  # a fresh window: nine failures are not enough
    assert not breaker.is_circuit_open(7)


def test_after_the_cooldown_a_failed_trial_opens_it_again(fake_breaker):
    clock, changes = fake_breaker
    attempts([False] * 10, clock=clock)
    clock.now += DEFAULT_THRESHOLDS.circuit_cooldown_seconds
    attempts([False], clock=clock)
    assert breaker.is_circuit_open(7)
    assert changes == [(7, True), (7, True)]


def test_the_tenants_cooldown_applies(fake_breaker):
    clock, _ = fake_breaker
    breaker.remember_thresholds(1, Thresholds(circuit_cooldown_seconds=5))
    attempts([False] * 10, clock=clock)
    clock.now += 5
    assert not breaker.is_circuit_open(7)


# --- persistence of a circuit change ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_opened_circuit_is_stored_with_source_traffic(acme, make_provider, as_tenant):
    breaker.reset()
    config = make_provider(acme, name="flaky")
    for _ in range(10):
        breaker.record_attempt(acme.pk, config.pk, False, 30.0, "HTTP 503: overloaded")
    db_thread.flush()
    with as_tenant(acme):
        config.refresh_from_db()
        results = list(HealthResult.objects.filter(provider=config))
    assert (config.health_status, config.health_source) == (UNHEALTHY, "traffic")
    assert [(r.status, r.source) for r in results] == [(UNHEALTHY, "traffic")]
    assert "10 of the last 10 requests failed" in results[0].error
    # the first probe after the cooldown is the half-open trial
    assert config.next_check_at <= timezone.now() + timedelta(seconds=DEFAULT_THRESHOLDS.circuit_cooldown_seconds)
    breaker.reset()


@pytest.mark.django_db(transaction=True)
def test_an_error_text_with_a_key_is_scrubbed_before_it_is_stored(acme, make_provider, as_tenant):
    breaker.reset()
    config = make_provider(acme, name="leaky", api_key="sk-live-abcdefghijklmnop1234")
    for _ in range(10):
        breaker.record_attempt(
            acme.pk, config.pk, False, 30.0, "Incorrect API key provided: sk-live-abcdefghijklmnop1234"
        )
    db_thread.flush()
    with as_tenant(acme):
        error = HealthResult.objects.get(provider=config).error
    assert "abcdefghijklmnop1234" not in error
    breaker.reset()


@pytest.mark.django_db(transaction=True)
def test_another_tenants_circuit_does_not_touch_this_tenants_providers(acme, globex, make_provider, as_tenant):
    breaker.reset()
    mine = make_provider(acme, name="a")
    theirs = make_provider(globex, name="a")
    for _ in range(10):
        breaker.record_attempt(globex.pk, theirs.pk, False, 30.0, "HTTP 500")
    db_thread.flush()
    with as_tenant(acme):
        assert ProviderConfig.objects.get(pk=mine.pk).health_status == UNKNOWN
        assert not HealthResult.objects.filter(provider=mine).exists()
    breaker.reset()


# --- end to end: traffic through the gateway opens the circuit, a probe closes it -----------------


@pytest.mark.django_db(transaction=True)
def test_a_failing_provider_loses_its_traffic_within_ten_requests_and_wins_it_back(
    gateway,  # noqa: F811  (the fixture imported above)
    acme,
    make_provider,
    upstream,
    as_tenant,
):
    from django.core.management import call_command

    from tenants.models import TokenScope
    from tests.conftest import ApiClient, make_token

    breaker.reset()
    acme.health_settings = {"circuit_cooldown_seconds": 1}
    acme.save()
    for name in ("a", "b"):
        make_provider(acme, name=name, base_url=upstream.base_url(name), api_key=f"sk-test-{name * 4}1111")
    admin = ApiClient(make_token(acme, TokenScope.ADMIN, "ops"))

    def status_of(name: str) -> tuple[str, str]:
        provider = next(p for p in admin.get("/api/v1/status/").json()["providers"] if p["name"] == name)
        return provider["health"]["status"], provider["health"]["source"]

    def send(count: int) -> None:
        for _ in range(count):
            r = api.post("/api/v1/completions", json={"prompt": "hello"})
            assert r.status_code == 200, r.text

    with gateway.client(make_token(acme, TokenScope.COMPLETIONS)) as api:
        send(20)
        assert upstream.counts("b")["chat"] > 0  # both share the traffic

        upstream.configure("b", failure_rate=1.0, failure_kind="500", failure_scope="chat")
        before = upstream.counts("b")["chat"]
        send(40)  # every request still succeeds: failover to a
        assert upstream.counts("b")["chat"] - before <= 10
        db_thread.flush()
        assert status_of("b") == (UNHEALTHY, "traffic")
        stalled = upstream.counts("b")["chat"]
        send(10)
        assert upstream.counts("b")["chat"] == stalled  # excluded while the circuit is open

        upstream.configure("b")  # recovered
        time.sleep(1.1)  # the cooldown; then the next probe is the half-open trial
        call_command("run_health_checks", "--once")
        assert status_of("b") == (HEALTHY, "probe")
        send(20)
        assert upstream.counts("b")["chat"] > stalled
    breaker.reset()
