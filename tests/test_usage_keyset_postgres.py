"""The request log and the usage API stay fast at a million rows (PostgreSQL): page 1 and
page 500 each take a bounded number of queries, the page query reads along the index
`usage_tenant_time_id` (its copy in each day partition; no sequential scan) and touches
about one page of rows however deep the cursor, and the totals are one query.

The rows go in once for the module, with one INSERT … SELECT … FROM generate_series
inside the tenant's RLS context, as the application's role (under 20 s on two cores),
into the day partitions of their four days (usage/partitions.py), and are flushed
afterwards as a transactional test's data is, their partitions dropped."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from tenants.models import Role, Tenant
from tenants.rls import tenant_context
from tests.conftest import ApiClient, make_token, requires_postgres
from tests.factories import MembershipFactory, TenantFactory, UserFactory
from usage import partitions
from usage.models import UsageRecord
from usage.queries import Cursor, filter_records, page, totals_of

pytestmark = [requires_postgres, pytest.mark.postgres, pytest.mark.django_db]

ROWS = 1_000_000
LIMIT = 50
PAGE = 500
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOG = reverse("console:requests")
API = "/api/v1/usage/"

# Three rows to a second, so cursors land among equal timestamps as they do in
# production; one row in a hundred has a token (a foreign key checked per row).
INSERT = """
INSERT INTO routing_usagerecord (
    tenant_id, token_id, provider_id, provider_name, providers_tried, attempts, attempt_count, status, status_code,
    error_code, model, stream, latency_ms, prompt_tokens, completion_tokens, total_tokens, cost, currency,
    request_id, prompt, created, endpoint, model_requested, trace
)
SELECT
    %(tenant)s, CASE WHEN g %% 100 = 0 THEN %(token)s END, NULL, CASE WHEN g %% 3 = 0 THEN 'b' ELSE 'a' END,
    '["a"]'::jsonb,
    '[{"provider": "a", "outcome": "success", "status_code": 200, "latency_ms": 120.0, "error": ""}]'::jsonb, 1,
    CASE WHEN g %% 20 = 0 THEN 'error' ELSE 'success' END, CASE WHEN g %% 20 = 0 THEN 502 ELSE 200 END,
    CASE WHEN g %% 20 = 0 THEN 'upstream_error' ELSE '' END, 'gpt-4o-mini', false, 100 + g %% 50, 10, 5, 15,
    0.0001, 'USD', 'req-' || g, NULL, %(t0)s::timestamptz + (g / 3) * interval '1 second', 'chat', '',
    '{}'::jsonb
FROM generate_series(1, %(rows)s) AS g
"""


@dataclass
class Million:
    tenant: Tenant
    viewer: Client  # the console, logged in as a viewer of the tenant
    api: ApiClient  # an admin-scope token of the tenant
    insert_seconds: float


@pytest.fixture(scope="module")
def million(django_db_setup, django_db_blocker):
    """One tenant with ROWS usage records and another tenant with one, committed once."""
    with django_db_blocker.unblock():
        tenant, other = TenantFactory(slug="million"), TenantFactory(slug="other")
        user = UserFactory(username="million-viewer")
        MembershipFactory(user=user, tenant=tenant, role=Role.VIEWER)
        api = ApiClient(make_token(tenant))
        viewer = Client()
        viewer.force_login(user)
        days = [T0.date() + timedelta(days=i) for i in range(ROWS // 3 // 86_400 + 1)]
        with partitions.locked() as cursor:
            for day in days:
                partitions.create_partition(cursor, day)
        started = time.perf_counter()
        token_id = tenant.tokens.get().pk
        with tenant_context(tenant.pk), connection.cursor() as cursor:
            cursor.execute(INSERT, {"tenant": tenant.pk, "token": token_id, "t0": T0, "rows": ROWS})
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE routing_usagerecord")
        seconds = time.perf_counter() - started
        with tenant_context(other.pk):
            UsageRecord.objects.create(tenant=other, status="success", provider_name="a", created=T0)
    yield Million(tenant, viewer, api, seconds)
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)
        partitions.drop_partitions_before(days[-1] + timedelta(days=1))


def cursor_of_page(tenant_id: int, number: int) -> str | None:
    """The `next` cursor that leads to page `number`: the last row of the page before,
    found with an OFFSET (what the pages avoid; here it only sets up the test)."""
    if number == 1:
        return None
    records = filter_records(tenant_id, {}).records.order_by("-created", "-id")
    row = records[(number - 1) * LIMIT - 1]
    return Cursor(row.created, row.pk).encode()


def test_following_next_499_times_lands_on_page_500(million):
    with tenant_context(million.tenant.pk):
        records = filter_records(million.tenant.pk, {}).records
        cursor = None
        for _ in range(PAGE - 1):
            cursor = page(records, cursor, LIMIT).next_cursor
        assert cursor == cursor_of_page(million.tenant.pk, PAGE)


def test_a_million_rows_go_in_well_under_a_minute_and_stay_with_their_tenant(million):
    assert million.insert_seconds < 45, f"{million.insert_seconds:.1f} s"
    with tenant_context(million.tenant.pk):
        assert UsageRecord.objects.count() == ROWS
    with tenant_context(None):
        assert UsageRecord.objects.count() == 0  # no tenant, no rows (RLS)


def test_page_1_and_page_500_of_the_request_log_take_a_bounded_number_of_queries(
    million, django_assert_max_num_queries
):
    with tenant_context(million.tenant.pk):
        deep = cursor_of_page(million.tenant.pk, PAGE)
        expected = page(filter_records(million.tenant.pk, {}).records, deep, LIMIT).rows
    with django_assert_max_num_queries(16):
        first = million.viewer.get(LOG)
    with django_assert_max_num_queries(16):
        r = million.viewer.get(LOG, {"cursor": deep})
    assert first.status_code == r.status_code == 200
    html = r.content.decode()
    assert f'data-total="requests">{ROWS}<' in html
    assert f'<tr id="request-{expected[0].pk}"' in html and f'<tr id="request-{expected[-1].pk}"' in html
    assert html.count('<tr id="request-') == LIMIT
    assert "Older →" in html and "← Newer" in html


def test_page_1_and_page_500_of_the_api_take_a_bounded_number_of_queries(million, django_assert_max_num_queries):
    with tenant_context(million.tenant.pk):
        deep = cursor_of_page(million.tenant.pk, PAGE)
    with django_assert_max_num_queries(10):
        first = million.api.get(API).json()
    with django_assert_max_num_queries(10):
        body = million.api.get(API, {"cursor": deep}).json()
    assert first["count"] == body["count"] == ROWS
    assert len(body["results"]) == LIMIT and body["next"] and body["previous"]
    ids = [r["id"] for r in body["results"]]
    assert ids == sorted(ids, reverse=True) and ids[0] < first["results"][-1]["id"]


def explain(queryset) -> dict:
    return json.loads(queryset.explain(format="json", analyze=True))[0]["Plan"]


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize("number", [1, PAGE, 10_000])
def test_the_page_query_reads_one_page_of_rows_along_the_index(million, number):
    with tenant_context(million.tenant.pk):
        cursor = Cursor.decode(cursor_of_page(million.tenant.pk, number)) if number > 1 else None
        records = filter_records(million.tenant.pk, {}).records
        query = records.filter(cursor.before()) if cursor else records
        plan = explain(query.select_related("token").order_by("-created", "-id")[: LIMIT + 1])
    scans = [n for n in nodes(plan) if n.get("Relation Name", "").startswith("routing_usagerecord")]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), plan
    assert {n.get("Index Name") for n in scans} <= partition_indexes("usage_tenant_time_id"), plan
    # Rows read: the page and one more, plus at most the three of the cursor's second, plus
    # the one row each other partition's scan offers the merge before the page is full.
    read = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in scans)
    assert read <= LIMIT + 1 + 3 + len(scans), plan


def partition_indexes(index: str) -> set[str]:
    """The partitioned index's copies, one per partition (how EXPLAIN names them)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", [index])
        return {name for (name,) in cursor.fetchall()}


def test_the_totals_over_a_million_rows_are_one_query(million, django_assert_num_queries, capsys):
    with tenant_context(million.tenant.pk):
        records = filter_records(million.tenant.pk, {}).records
        started = time.perf_counter()
        with django_assert_num_queries(1):
            totals = totals_of(records)
        seconds = time.perf_counter() - started
    assert totals["requests"] == ROWS and totals["errors"] == ROWS // 20
    assert totals["total_tokens"] == 15 * ROWS
    with capsys.disabled():
        print(f"\n[{ROWS} rows: insert {million.insert_seconds:.1f} s, totals {seconds * 1000:.0f} ms]")
