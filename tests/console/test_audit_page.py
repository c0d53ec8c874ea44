"""The console's audit log page: admins only, newest first, filters, keyset "older" pages,
the htmx fragment, bad input, empty states, no secrets; and changes made in the console
are audited as the user who made them, one entry each."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from providers.models import ProviderConfig
from tenants.models import ActorKind, ApiToken, AuditEntry, Membership, Role, TokenScope
from tenants.rls import tenant_context
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/audit/"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
KEY = "sk-live-console-0123456789abcdefXYZ"


def entry(tenant, minutes, **fields) -> AuditEntry:
    values = {
        "actor_kind": ActorKind.USER, "actor": "alice", "object_type": "provider", "object_id": "1",
        "object_name": "main", "action": "update", "before": {"weight": 50}, "after": {"weight": 60},
    }  # fmt: skip
    values.update(fields)
    with tenant_context(tenant.pk):
        return AuditEntry.objects.create(tenant=tenant, created=T0 + timedelta(minutes=minutes), **values)


def clear_log(*tenants) -> None:
    """Fixtures write entries (memberships, tokens): start the page tests from nothing."""
    for tenant in tenants:
        with tenant_context(tenant.pk):
            AuditEntry.objects.filter(tenant=tenant).delete()


def log(tenant) -> list[AuditEntry]:
    with tenant_context(tenant.pk):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="audit-(\d+)"', html)]


@pytest.fixture
def acme_log(acme, globex, alice, carol):
    clear_log(acme, globex)
    made = [
        entry(acme, 1, object_name="openai-main", action="create", before=None,
              after={"name": "openai-main", "type": "openai", "weight": 50, "api_key": "set", "base_url": "",
                     "settings": {}, "region": "", "enabled": True, "priority": 0}),
        entry(acme, 2, object_name="openai-main", actor_kind=ActorKind.TOKEN, actor="ci-bot (axf_Ab12Cd34)"),
        entry(acme, 3, object_type="api_token", object_id="7", object_name="deploy", action="revoke",
              before={"revoked_at": None}, after={"revoked_at": "2026-11-01T12:03:00+00:00"}),
        entry(acme, 4, object_type="membership", object_id="3", object_name="erin", actor_kind=ActorKind.COMMAND,
              actor="addmember", before={"role": "viewer"}, after={"role": "operator"}),
        entry(acme, 5, object_name="anthropic-backup", object_id="2", action="drain",
              before={"operator_state": "", "operator_reason": ""},
              after={"operator_state": "drained", "operator_reason": "vendor incident"}),
    ]  # fmt: skip
    entry(globex, 6, object_name="globex-secret-provider")
    return made


# --- who may see it -----------------------------------------------------------------------


def test_an_admin_sees_the_log_newest_first(alice_client, acme_log):
    r = alice_client.get(URL)
    html = r.content.decode()
    assert r.status_code == 200
    assert row_ids(html) == [e.pk for e in reversed(acme_log)]
    assert 'aria-current="page"' in html and ">Audit log<" in html
    assert "globex-secret-provider" not in html


def test_viewers_and_operators_are_refused(bob_client, dave_client, acme_log):
    assert bob_client.get(URL).status_code == 403
    assert dave_client.get(URL).status_code == 403
    assert "Audit log" not in dave_client.get("/").content.decode()


def test_anonymous_visitors_go_to_the_login(client, acme_log):
    r = client.get(URL)
    assert r.status_code == 302 and "login" in r["Location"]


def test_another_tenants_admin_sees_only_their_own_log(carol_client, acme_log):
    html = carol_client.get(URL).content.decode()
    assert "globex-secret-provider" in html
    for name in ("openai-main", "anthropic-backup", "erin", "deploy"):
        assert name not in html
    assert row_ids(carol_client.get(URL, {"object_id": "7"}).content.decode()) == []


def test_the_page_is_read_only(alice_client, acme, acme_log):
    before = [(e.pk, e.action) for e in log(acme)]
    assert alice_client.post(URL, {"action": "delete"}).status_code == 405
    assert [(e.pk, e.action) for e in log(acme)] == before


# --- what a row shows ---------------------------------------------------------------------


def test_a_row_shows_when_who_action_object_and_the_change(alice_client, acme_log):
    html = alice_client.get(URL).content.decode()
    drain = html[html.index(f'id="audit-{acme_log[4].pk}"') :].split("</tr>")[0]
    assert "2026-11-01 12:05:00" in drain and 'datetime="2026-11-01T12:05:00+00:00"' in drain
    assert "User" in drain and "alice" in drain and "act-drain" in drain and "Provider" in drain
    assert "anthropic-backup" in drain and "object_id=2" in drain
    assert re.search(r"operator_state.*<del[^>]*>.*empty</del>.*→.*<ins[^>]*>.*drained</ins>", drain, re.S)
    assert "vendor incident" in drain
    token_row = html[html.index(f'id="audit-{acme_log[1].pk}"') :].split("</tr>")[0]
    assert "API token" in token_row and "ci-bot (axf_Ab12Cd34)" in token_row
    revoke = html[html.index(f'id="audit-{acme_log[2].pk}"') :].split("</tr>")[0]
    assert "2026-11-01 12:03:00 UTC" in revoke and ">none</del>" in revoke.replace("\n", "")


def test_a_create_lists_the_fields_it_set_and_folds_the_rest(alice_client, acme_log):
    html = alice_client.get(URL).content.decode()
    create = html[html.index(f'id="audit-{acme_log[0].pk}"') :].split("</tr>")[0]
    assert "<del" not in create  # nothing before a create
    for field in ("name", "type", "weight", "api_key", "enabled", "priority"):
        assert f'<span class="field">{field}</span>' in create
    for empty_field in ("base_url", "settings", "region"):
        assert f'<span class="field">{empty_field}</span>' not in create
    assert "<details><summary>2 more fields</summary>" in create


def test_values_are_escaped(alice_client, acme):
    clear_log(acme)
    entry(acme, 1, object_name="<script>alert(1)</script>", after={"model": "<img src=x onerror=alert(1)>"})
    html = alice_client.get(URL).content.decode()
    assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


# --- filters and pages --------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"object_type": "membership"}, [3]),
        ({"action": "revoke"}, [2]),
        ({"actor_kind": "token"}, [1]),
        ({"actor": "ADDMEMBER"}, [3]),
        ({"object_name": "openai"}, [1, 0]),
        ({"object_type": "provider", "object_id": "2"}, [4]),
        ({"since": "2026-11-01T12:03", "until": "2026-11-01T12:05"}, [3, 2]),
        ({"since": "2026-11-01T12:04:00"}, [4, 3]),
        ({"object_type": "", "action": "", "actor": "", "since": ""}, [4, 3, 2, 1, 0]),
    ],
)
def test_it_filters(alice_client, acme_log, params, expected):
    r = alice_client.get(URL, params)
    assert r.status_code == 200
    assert row_ids(r.content.decode()) == [acme_log[i].pk for i in expected]


def test_the_form_keeps_the_filters(alice_client, acme_log):
    html = alice_client.get(
        URL, {"object_type": "membership", "actor": "add", "since": "2026-11-01T12:00"}
    ).content.decode()
    assert '<option value="membership" selected>' in html
    assert 'name="actor" value="add"' in html and 'value="2026-11-01T12:00"' in html


def test_an_objects_history_keeps_its_id_across_filters(alice_client, acme_log):
    html = alice_client.get(URL, {"object_type": "provider", "object_id": "2"}).content.decode()
    assert '<input type="hidden" name="object_id" value="2">' in html
    assert "history of one object" in html


def test_older_pages_walk_the_log_once(alice_client, acme):
    clear_log(acme)
    made = [entry(acme, minute // 3, object_name=f"p{minute}") for minute in range(120)]  # ties in each minute
    expected = [e.pk for e in sorted(made, key=lambda e: (e.created, e.pk), reverse=True)]
    seen, url = [], URL
    while url:
        with CaptureQueriesContext(connection) as queries:
            html = alice_client.get(url).content.decode()
        assert sum("tenants_auditentry" in q["sql"] for q in queries.captured_queries) == 1  # the page, no N+1
        assert len(queries) <= 14  # with the session, user, memberships, RLS settings and savepoints
        seen += row_ids(html)
        match = re.search(r'<a class="btn small" rel="next" href="([^"]+)"', html)
        url = URL + match.group(1).replace("&amp;", "&") if match else None
    assert seen == expected
    assert len(row_ids(alice_client.get(URL).content.decode())) == 50


def test_an_older_page_links_back_to_the_newest(alice_client, acme, acme_log):
    html = alice_client.get(URL, {"limit": 2}).content.decode()
    older = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    page2 = alice_client.get(URL + older).content.decode()
    assert row_ids(page2) == [acme_log[2].pk, acme_log[1].pk]
    assert "← Newest" in page2 and "limit=2" in older


def test_htmx_gets_the_results_fragment_alone(alice_client, acme_log):
    r = alice_client.get(URL, {"action": "drain"}, headers={"HX-Request": "true"})
    html = r.content.decode()
    assert r.status_code == 200
    assert "<html" not in html and '<nav class="mainnav"' not in html and "<form" not in html
    assert row_ids(html) == [acme_log[4].pk]


# --- bad input and empty states -----------------------------------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-02-30T10:00"}, "until"),
        ({"since": "²⁰²⁶-11-01"}, "since"),
        ({"limit": "²"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"actor": "x" * 201}, "actor"),
        ({"actor": "a\x00b"}, "actor"),
        ({"actor_kind": "robot"}, "actor_kind"),
        ({"object_type": "DROP TABLE"}, "object_type"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"page": "2"}, "page"),
    ],
)
def test_bad_input_shows_the_error_and_never_fails(alice_client, acme, acme_log, params, field):
    before = len(log(acme))
    r = alice_client.get(URL, params)
    html = r.content.decode()
    assert r.status_code == 400, (params, r.status_code)
    assert 'role="alert"' in html and f"{field}:" in html
    assert row_ids(html) == []
    if field in ("since", "until", "actor"):
        assert 'aria-invalid="true"' in html and "has-error" in html
    r = alice_client.get(URL, params, headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'role="alert"' in r.content.decode()  # htmx swaps 2xx only
    assert len(log(acme)) == before


def test_an_empty_log_says_what_will_appear(alice_client, acme):
    clear_log(acme)
    html = alice_client.get(URL).content.decode()
    assert "No changes recorded yet." in html and 'class="table audit"' not in html


def test_filters_that_match_nothing_say_so(alice_client, acme_log):
    html = alice_client.get(URL, {"actor": "nobody-at-all"}).content.decode()
    assert "No entries match these filters." in html


# --- the console's own changes are audited as their user ----------------------------------


def test_console_changes_are_audited_once_each_as_the_user(alice_client, dave_client, acme, alice, make_provider):
    config = make_provider(acme, name="main", api_key=KEY, weight=50)
    erin = UserFactory(username="erin")
    MembershipFactory(user=erin, tenant=acme, role=Role.VIEWER)
    clear_log(acme)

    def one(client, url, data, **headers):
        start = len(log(acme))
        r = client.post(url, data, **headers)
        assert r.status_code in (200, 302), (url, r.status_code, r.content[:500])
        new = log(acme)[start:]
        assert len(new) == 1, (url, [(e.object_type, e.action) for e in new])
        return new[0]

    htmx = {"headers": {"HX-Request": "true"}}
    weight = one(dave_client, reverse("console:provider_weight", args=["main"]), {"weight": "70"}, **htmx)
    assert (weight.actor_kind, weight.actor, weight.before, weight.after) == (
        "user",
        "dave",
        {"weight": 50},
        {"weight": 70},
    )
    drain = one(
        dave_client, reverse("console:provider_state", args=["main"]), {"state": "drained", "reason": "upgrade"}, **htmx
    )
    assert (drain.action, drain.actor) == ("drain", "dave")
    token = one(alice_client, reverse("console:tokens"), {"name": "ci", "scope": TokenScope.ADMIN, "form_id": "f-1"})
    assert (token.object_type, token.action, token.actor) == ("api_token", "create", "alice")
    with tenant_context(acme.pk):
        issued = ApiToken.objects.get(tenant=acme, name="ci")
    revoke = one(alice_client, reverse("console:token_revoke", args=[issued.pk]), {})
    assert (revoke.action, revoke.actor) == ("revoke", "alice")
    membership = Membership.objects.get(tenant=acme, user=erin)
    role = one(alice_client, reverse("console:member_role", args=[membership.pk]), {"role": Role.OPERATOR})
    assert (role.action, role.before, role.after, role.actor) == (
        "update",
        {"role": "viewer"},
        {"role": "operator"},
        "alice",
    )
    removed = one(alice_client, reverse("console:member_remove", args=[membership.pk]), {})
    assert (removed.object_type, removed.action, removed.object_name) == ("membership", "delete", "erin")
    deleted = one(dave_client, reverse("console:provider_delete", args=["main"]), {})
    assert (deleted.action, deleted.actor) == ("delete", "dave")

    # Repeating a post changes nothing and writes nothing.
    start = len(log(acme))
    alice_client.post(reverse("console:token_revoke", args=[issued.pk]), {})
    alice_client.post(reverse("console:tokens"), {"name": "ci", "scope": TokenScope.ADMIN, "form_id": "f-1"})
    assert len(log(acme)) == start

    page = alice_client.get(URL).content.decode()
    for secret in (KEY, config.api_key_encrypted, issued.token_hash):
        assert secret not in page
    assert all(secret not in str((e.before, e.after)) for e in log(acme) for secret in (KEY, issued.token_hash))
    with tenant_context(acme.pk):
        assert not ProviderConfig.objects.filter(tenant=acme).exists()


def test_the_console_provider_form_is_audited_once_and_a_resave_not_at_all(dave_client, acme):
    clear_log(acme)
    form = {
        "name": "formed", "type": "openai", "model": "gpt-4o-mini", "api_key": KEY, "enabled": "on", "priority": "0",
        "weight": "40", "rate_limit": "0", "timeout_seconds": "30", "settings": "", "base_url": "", "region": "",
        "secret_ref": "", "cost_input_per_1k": "", "cost_output_per_1k": "",
    }  # fmt: skip
    r = dave_client.post(reverse("console:provider_add"), form)
    assert r.status_code == 302, r.content.decode()[:2000]
    edit = reverse("console:provider_edit", args=["formed"])
    assert dave_client.post(edit, {**form, "api_key": "", "weight": "45"}).status_code == 302
    assert dave_client.post(edit, {**form, "api_key": "", "weight": "45"}).status_code == 302  # sent again
    assert dave_client.post(edit, {**form, "weight": "45"}).status_code == 302  # the same key typed again
    entries = log(acme)
    assert [(e.action, e.actor_kind, e.actor) for e in entries] == [
        ("create", "user", "dave"),
        ("update", "user", "dave"),
    ]
    assert (entries[1].before, entries[1].after) == ({"weight": 40}, {"weight": 45})
    with tenant_context(acme.pk):
        encrypted = ProviderConfig.objects.get(tenant=acme, name="formed").api_key_encrypted
    assert all(secret not in str((e.before, e.after)) for e in entries for secret in (KEY, encrypted))
