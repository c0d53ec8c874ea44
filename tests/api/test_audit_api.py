"""GET /api/v1/audit/: the tenant's log newest first, filters, cursor pages, scoping and
bad input (every kind a 400 envelope, never a 500)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants import audit
from tenants.models import ActorKind, AuditEntry, TokenScope
from tenants.rls import tenant_context
from tests.conftest import ApiClient, make_token, requires_postgres

pytestmark = pytest.mark.django_db

URL = "/api/v1/audit/"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def entry(tenant, minutes, **fields) -> AuditEntry:
    values = {
        "actor_kind": ActorKind.USER, "actor": "alice", "object_type": "provider", "object_id": "1",
        "object_name": "main", "action": "update", "before": {"weight": 50}, "after": {"weight": 60},
    }  # fmt: skip
    values.update(fields)
    with tenant_context(tenant.pk):
        return AuditEntry.objects.create(tenant=tenant, created=T0 + timedelta(minutes=minutes), **values)


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [e["object_name"] for e in response.json()["results"]]


def count(tenant) -> int:
    with tenant_context(tenant.pk):
        return AuditEntry.objects.filter(tenant=tenant).count()


@pytest.fixture
def acme_log(acme, globex):
    """Five acme entries a minute apart (oldest first) and one of globex; the API tokens
    the fixtures issue write entries of their own now, so the log starts clean."""
    with tenant_context(acme.pk):
        AuditEntry.objects.filter(tenant=acme).delete()
    made = [
        entry(acme, 1, object_name="openai-main", action="create", before=None, after={"weight": 50}),
        entry(acme, 2, object_name="openai-main", actor_kind=ActorKind.TOKEN, actor="ci-bot (axf_Ab12Cd34)"),
        entry(acme, 3, object_type="api_token", object_id="7", object_name="deploy", action="revoke",
              before={"revoked_at": None}, after={"revoked_at": "2026-11-01T12:03:00+00:00"}),
        entry(acme, 4, object_type="membership", object_name="erin", actor_kind=ActorKind.COMMAND, actor="addmember",
              before={"role": "viewer"}, after={"role": "operator"}),
        entry(acme, 5, object_name="anthropic-backup", action="drain", before={"operator_state": ""},
              after={"operator_state": "drained"}),
    ]  # fmt: skip
    with tenant_context(globex.pk):
        AuditEntry.objects.filter(tenant=globex).delete()
    entry(globex, 6, object_name="globex-secret-provider")
    return made


def test_it_lists_the_tenants_entries_newest_first(acme_api, acme_log):
    r = acme_api.get(URL)
    assert names(r) == ["anthropic-backup", "erin", "deploy", "openai-main", "openai-main"]
    first = r.json()["results"][0]
    assert first == {
        "id": acme_log[-1].pk, "created": "2026-11-01T12:05:00Z", "actor_kind": "user", "actor": "alice",
        "object_type": "provider", "object_id": "1", "object_name": "anthropic-backup", "action": "drain",
        "before": {"operator_state": ""}, "after": {"operator_state": "drained"},
    }  # fmt: skip
    assert r.json()["next"] is None


def test_another_tenants_entries_never_appear(globex_api, acme_api, acme_log):
    assert names(globex_api.get(URL)) == ["globex-secret-provider"]
    assert "globex" not in acme_api.get(URL).content.decode()
    assert names(globex_api.get(URL, {"object_name": "openai"})) == []
    assert names(globex_api.get(URL, {"object_id": "7"})) == []


def test_a_cursor_from_another_tenant_shows_only_the_callers_entries(globex_api, acme_api, acme_log):
    next_url = acme_api.get(URL, {"limit": 1}).json()["next"]
    assert names(globex_api.get(next_url)) == []  # globex's one entry is newer than acme's cursor


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"object_type": "provider"}, ["anthropic-backup", "openai-main", "openai-main"]),
        ({"object_type": "membership"}, ["erin"]),
        ({"action": "revoke"}, ["deploy"]),
        ({"action": "drain", "object_type": "provider"}, ["anthropic-backup"]),
        ({"actor_kind": "token"}, ["openai-main"]),
        ({"actor_kind": "command"}, ["erin"]),
        ({"actor": "CI-BOT"}, ["openai-main"]),
        ({"actor": "axf_Ab12"}, ["openai-main"]),
        ({"object_name": "OPENAI"}, ["openai-main", "openai-main"]),
        ({"object_id": "7"}, ["deploy"]),
        ({"since": "2026-11-01T12:04:00Z"}, ["anthropic-backup", "erin"]),
        ({"until": "2026-11-01T12:02:00Z"}, ["openai-main"]),
        ({"since": "2026-11-01T12:02:00", "until": "2026-11-01T12:04:00"}, ["deploy", "openai-main"]),
        ({"since": "2026-11-01T13:02:00+01:00", "until": "2026-11-01T13:03:00+01:00"}, ["openai-main"]),
        ({"since": "2026-11-02"}, []),
        ({"until": "2026-11-01"}, []),
        (
            {"object_type": "", "action": "", "actor": ""},
            ["anthropic-backup", "erin", "deploy", "openai-main", "openai-main"],
        ),
        ({"object_type": "budget"}, []),
    ],
)
def test_it_filters(acme_api, acme_log, params, expected):
    assert names(acme_api.get(URL, params)) == expected


def test_cursor_pages_walk_the_whole_log_once_in_order(acme_api, acme, acme_log):
    # Three more in the same instant as the newest: ties break on id, none lost or repeated.
    same = [entry(acme, 5, object_name=f"tie-{i}") for i in range(3)]
    expected = [e.pk for e in sorted([*acme_log, *same], key=lambda e: (e.created, e.pk), reverse=True)]
    seen, url, pages = [], f"{URL}?limit=2", 0
    while url:
        body = acme_api.get(url).json()
        assert len(body["results"]) <= 2
        seen += [e["id"] for e in body["results"]]
        url, pages = body["next"], pages + 1
        if url:
            assert urlsplit(url).path == URL and "limit=2" in url
    assert seen == expected and pages == 4


def test_the_next_link_keeps_the_filters(acme_api, acme_log):
    body = acme_api.get(URL, {"object_type": "provider", "limit": 2}).json()
    assert [e["object_name"] for e in body["results"]] == ["anthropic-backup", "openai-main"]
    rest = acme_api.get(body["next"]).json()
    assert [e["action"] for e in rest["results"]] == ["create"] and rest["next"] is None


def test_an_exactly_full_last_page_has_no_next(acme_api, acme_log):
    body = acme_api.get(URL, {"limit": 5}).json()
    assert len(body["results"]) == 5 and body["next"] is None


def test_a_page_is_one_query_for_the_entries(acme_api, acme):
    for minute in range(60):
        entry(acme, minute, object_name=f"p{minute}")
    acme_api.get(URL)  # warm the token cache
    with CaptureQueriesContext(connection) as queries:
        body = acme_api.get(URL, {"limit": 50}).json()
    assert len(body["results"]) == 50 and body["next"]
    assert sum("tenants_auditentry" in q["sql"] for q in queries.captured_queries) == 1
    assert len(queries) <= 8  # with the token's last-use stamp, RLS settings and savepoints


@requires_postgres
def test_an_older_page_reads_along_the_tenant_time_index(acme, acme_log):
    query = audit.parse_query({"cursor": audit.encode_cursor(acme_log[3]), "object_type": "provider"})
    with tenant_context(acme.pk), CaptureQueriesContext(connection) as queries:
        audit.entries_page(acme.pk, query)
    (sql,) = [q["sql"] for q in queries.captured_queries if "tenants_auditentry" in q["sql"]]
    with tenant_context(acme.pk), connection.cursor() as cursor:
        # A handful of rows: a sort is cheapest here. Forbid it to show the index serves the order.
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "audit_tenant_time" in plan and "Sort" not in plan, plan


def test_it_needs_an_admin_token(acme, acme_log):
    r = ApiClient(make_token(acme, TokenScope.COMPLETIONS, "app")).get(URL)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = ApiClient(None).get(URL)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = ApiClient("axf_not-a-real-token-at-all-00000000").get(URL)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_it_is_read_only(acme_api, acme, acme_log):
    before = count(acme)
    for method in ("post", "put", "patch", "delete"):
        r = getattr(acme_api, method)(URL, {"action": "delete"})
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", method
    assert count(acme) == before


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "params, field",
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01"}, "since"),
        ({"until": "2026-02-30T10:00"}, "until"),
        ({"until": "2026-11-01T25:00"}, "until"),
        ({"since": "2026-11-01T12:00:00" + "0" * 5000}, "since"),
        ({"since": "²⁰²⁶-11-01"}, "since"),
        ({"since": "2026-11-01\x00"}, "since"),
        ({"since": "２０２６-11-01"}, "since"),
        ({"since": "9999-12-31T23:59:59-23:59"}, "since"),
        ({"until": "0001-01-01T00:00:00+23:59"}, "until"),
        ({"since": "2026-11-01T12:00+99:00"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"limit": "٣"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"actor_kind": "robot"}, "actor_kind"),
        ({"object_type": "Provider!"}, "object_type"),
        ({"object_type": "x" * 41}, "object_type"),
        ({"action": "drop table"}, "action"),
        ({"actor": "a" * 201}, "actor"),
        ({"actor": "al\x00ice"}, "actor"),
        ({"object_name": "\x00"}, "object_name"),
        ({"object_id": "1\x00"}, "object_id"),
        ({"cursor": "garbage!!"}, "cursor"),
        ({"cursor": b64("not a cursor")}, "cursor"),
        ({"cursor": b64("2026-11-01T12:00:00+00:00|x")}, "cursor"),
        ({"cursor": b64("2026-11-01T12:00:00|5")}, "cursor"),
        ({"cursor": b64("2026-13-01T12:00:00+00:00|5")}, "cursor"),
        ({"cursor": b64("2026-11-01T12:00:00+00:00|²")}, "cursor"),
        ({"cursor": b64("9999-12-31T23:59:59-23:59|5")}, "cursor"),
        ({"cursor": b64("２０２６-11-01T12:00:00+00:00|5")}, "cursor"),
        ({"cursor": b64("2026-11-01T12:00:00+00:00|" + "9" * 40)}, "cursor"),
        ({"cursor": "A" * 5000}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe|1").decode()}, "cursor"),
        ({"offset": "10"}, "offset"),
        ({"page": "2"}, "page"),
        ({"objecttype": "provider"}, "objecttype"),
    ],
)
def test_bad_input_is_a_400_envelope_and_changes_nothing(acme_api, acme, acme_log, params, field):
    before = count(acme)
    r = acme_api.get(URL, params)
    assert r.status_code == 400, (params, r.status_code, r.content[:300])
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["details"]["field"] == field[:40]
    assert count(acme) == before


def test_a_huge_unknown_parameter_name_is_refused_briefly(acme_api, acme_log):
    r = acme_api.get(URL, {"x" * 3000: "1"})
    assert r.status_code == 400 and len(r.content) < 1000


def test_the_endpoint_is_in_the_schema(acme_api):
    r = acme_api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and "/api/v1/audit/" in r.content.decode()


def test_changes_made_through_the_api_show_up_in_it(acme_api, acme):
    body = {"name": "main", "type": "openai", "model": "gpt-4o-mini", "api_key": "sk-live-0123456789abcdefghij"}
    assert acme_api.post("/api/v1/providers/", body).status_code == 201
    assert acme_api.patch("/api/v1/providers/main/", {"weight": 75}).status_code == 200
    r = acme_api.get(URL, {"object_type": "provider"})
    results = r.json()["results"]
    assert [(e["action"], e["after"].get("weight")) for e in results] == [("update", 75), ("create", 50)]
    assert results[0]["actor_kind"] == "token" and results[0]["actor"].startswith("test (axf_")
    assert "sk-live-0123456789abcdefghij" not in r.content.decode()
