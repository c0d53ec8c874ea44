"""providers/operator.py: setting and clearing operator states, their validation, the
audit entry each writes, the event after commit, and the router obeying them."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from axonflow_site import events
from axonflow_site.errors import ValidationFailed
from providers.models import ProviderConfig
from providers.operator import clear_operator_state, set_operator_state
from routing import cache
from tenants import audit
from tenants.models import ActorKind, AuditEntry

KEY = "sk-operator-secret-0123456789"


@pytest.fixture
def provider(acme, make_provider):
    return make_provider(acme, name="main", api_key=KEY)


@pytest.fixture
def actions():
    """The events.operator_action sends, as dicts."""
    sent = []

    def capture(sender, **kwargs):
        sent.append(kwargs)

    events.operator_action.connect(capture, weak=False, dispatch_uid="test-operator-capture")
    yield sent
    events.operator_action.disconnect(dispatch_uid="test-operator-capture")


def stored(config, as_tenant) -> ProviderConfig:
    with as_tenant(config.tenant):
        return ProviderConfig.objects.get(pk=config.pk)


def entries(tenant, as_tenant) -> list[AuditEntry]:
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant, object_type="provider").order_by("pk"))


def as_alice(as_tenant, tenant):
    """The console's context: alice acting inside acme's transaction."""

    class Block:
        def __enter__(self):
            self.actor = audit.acting_as(ActorKind.USER, "alice")
            self.actor.__enter__()
            self.tenant = as_tenant(tenant)
            self.tenant.__enter__()

        def __exit__(self, *exc):
            self.tenant.__exit__(*exc)
            self.actor.__exit__(*exc)

    return Block()


def test_it_drains_a_provider_and_records_who_why_and_when(provider, acme, as_tenant, actions,
                                                          django_capture_on_commit_callbacks):  # fmt: skip
    until = timezone.now() + datetime.timedelta(hours=2)
    before = len(entries(acme, as_tenant))
    with django_capture_on_commit_callbacks(execute=True), as_alice(as_tenant, acme):
        set_operator_state(provider, "drained", "  upstream incident #42 ", until)
    config = stored(provider, as_tenant)
    assert config.operator_state == "drained" and config.active_operator_state == "drained"
    assert config.operator_reason == "upstream incident #42"
    assert config.operator_by == "alice" and config.operator_until == until
    assert abs((timezone.now() - config.operator_at).total_seconds()) < 5
    (entry,) = entries(acme, as_tenant)[before:]
    assert entry.action == "drain" and entry.actor == "alice" and entry.actor_kind == ActorKind.USER
    assert entry.after["operator_state"] == "drained" and entry.before["operator_state"] == ""
    assert KEY not in str(entry.before) + str(entry.after)
    assert actions == [{"signal": events.operator_action, "tenant_id": acme.pk, "provider_id": provider.pk,
                        "action": "drain", "actor": "alice", "reason": "upstream incident #42", "until": until}]  # fmt: skip


@pytest.mark.parametrize(
    "state, action", [("forced_unhealthy", "force_unhealthy"), ("forced_healthy", "force_healthy")]
)
def test_it_forces_a_state_with_its_own_audit_action(provider, acme, as_tenant, state, action):
    before = len(entries(acme, as_tenant))
    with as_alice(as_tenant, acme):
        set_operator_state(provider, state, "maintenance")
    assert stored(provider, as_tenant).operator_state == state
    assert [e.action for e in entries(acme, as_tenant)[before:]] == [action]


def test_clearing_writes_clear_state_and_empties_every_field(provider, acme, as_tenant, actions,
                                                             django_capture_on_commit_callbacks):  # fmt: skip
    with as_alice(as_tenant, acme):
        set_operator_state(provider, "drained", "deploy")
    before = len(entries(acme, as_tenant))
    with django_capture_on_commit_callbacks(execute=True), as_alice(as_tenant, acme):
        clear_operator_state(provider)
    config = stored(provider, as_tenant)
    assert (config.operator_state, config.operator_reason, config.operator_by) == ("", "", "")
    assert config.operator_at is None and config.operator_until is None
    assert [e.action for e in entries(acme, as_tenant)[before:]] == ["clear_state"]
    assert actions[-1]["action"] == "clear_state"


def test_repeating_the_same_state_or_clearing_nothing_writes_no_second_entry(provider, acme, as_tenant):
    before = len(entries(acme, as_tenant))
    with as_alice(as_tenant, acme):
        set_operator_state(provider, "drained", "deploy")
        set_operator_state(provider, "drained", "deploy")
        clear_operator_state(provider)
        clear_operator_state(provider)
    assert [e.action for e in entries(acme, as_tenant)[before:]] == ["drain", "clear_state"]


def test_changing_the_reason_is_recorded(provider, acme, as_tenant):
    with as_alice(as_tenant, acme):
        set_operator_state(provider, "drained", "deploy")
        set_operator_state(provider, "drained", "deploy, part two")
    last = entries(acme, as_tenant)[-1]
    assert last.action == "drain" and last.after == {"operator_reason": "deploy, part two"}


def test_a_naive_until_is_read_as_utc(provider, acme, as_tenant):
    with as_alice(as_tenant, acme):
        set_operator_state(provider, "forced_healthy", "probe is wrong", "2999-01-31T18:30")
    assert stored(provider, as_tenant).operator_until == datetime.datetime(2999, 1, 31, 18, 30, tzinfo=datetime.UTC)


def test_an_expired_state_counts_as_none(provider, acme, as_tenant):
    with as_alice(as_tenant, acme):
        set_operator_state(provider, "drained", "short", timezone.now() + datetime.timedelta(seconds=30))
    config = stored(provider, as_tenant)
    assert config.operator_state_at(timezone.now() + datetime.timedelta(minutes=1)) == ""
    with as_alice(as_tenant, acme):
        clear_operator_state(config)  # an expired state is cleared all the same
    assert stored(provider, as_tenant).operator_state == ""


PAST = timezone.now() - datetime.timedelta(minutes=1)
BAD = [
    ("", "r", None, "state"),
    ("none", "r", None, "state"),
    ("DRAINED", "r", None, "state"),
    (None, "r", None, "state"),
    (["drained"], "r", None, "state"),
    ("drained", "", None, "reason"),
    ("drained", "   ", None, "reason"),
    ("drained", None, None, "reason"),
    ("drained", 42, None, "reason"),
    ("drained", "x" * 501, None, "reason"),
    ("drained", "r", PAST, "until"),
    ("drained", "r", "2001-01-01T00:00", "until"),
    ("drained", "r", "tomorrow", "until"),
    ("drained", "r", "2030-13-45T99:99", "until"),
    ("drained", "r", "9" * 5000, "until"),
    ("drained", "r", 1767225600, "until"),
    ("drained", "r", {"at": "2030-01-01"}, "until"),
]


@pytest.mark.parametrize("state, reason, until, field", BAD)
def test_bad_input_raises_naming_the_field_and_changes_nothing(provider, acme, as_tenant, state, reason, until, field):
    before = (len(entries(acme, as_tenant)), stored(provider, as_tenant).operator_state)
    with pytest.raises(ValidationFailed) as raised, as_alice(as_tenant, acme):
        set_operator_state(provider, state, reason, until)
    assert raised.value.details == {"field": field}
    assert (len(entries(acme, as_tenant)), stored(provider, as_tenant).operator_state) == before


def test_the_routing_snapshot_drops_on_commit_and_reloads_with_the_state(acme, make_provider, as_tenant,
                                                                         django_capture_on_commit_callbacks):  # fmt: skip
    a, _b = make_provider(acme, name="a"), make_provider(acme, name="b")
    assert {c.name: c.operator_state for c in cache.load_snapshot(acme.pk).configs} == {"a": "", "b": ""}
    assert cache.cached_snapshot(acme.pk) is not None
    with django_capture_on_commit_callbacks(execute=True), as_alice(as_tenant, acme):
        set_operator_state(a, "drained", "deploy")
    assert cache.cached_snapshot(acme.pk) is None
    snapshot = cache.load_snapshot(acme.pk)
    assert {c.name: c.operator_state_at(snapshot.loaded_at) for c in snapshot.configs} == {"a": "drained", "b": ""}
