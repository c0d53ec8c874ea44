"""usage/queries.py: filters from query parameters, keyset pages, cursors, totals."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.http import QueryDict

from axonflow_site.errors import ValidationFailed
from usage.models import UsageRecord
from usage.queries import NEWER, OLDER, Cursor, filter_records, page, totals_of

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def rows(acme, globex, as_tenant):
    """Twelve acme records, three to a second (so pages cut through equal timestamps),
    and one of globex at the same moments."""
    with as_tenant(acme):
        UsageRecord.objects.bulk_create(
            [
                UsageRecord(
                    tenant=acme, status="error" if i % 4 == 0 else "success", provider_name="a" if i % 2 else "b",
                    model="gpt-4o-mini", model_requested="fast" if i < 6 else "", request_id=f"req-{i}",
                    prompt_tokens=10, completion_tokens=i, cost=Decimal("0.001"), latency_ms=100 + i,
                    created=T0 + timedelta(seconds=i // 3),
                )
                for i in range(12)
            ]
        )  # fmt: skip
    with as_tenant(globex):
        UsageRecord.objects.create(tenant=globex, status="success", provider_name="a", created=T0)
    with as_tenant(acme):
        return list(UsageRecord.objects.filter(tenant=acme).order_by("-created", "-id"))


def query(tenant, **params):
    """filter_records over a QueryDict, as views pass it."""
    query_dict = QueryDict(mutable=True)
    query_dict.update(params)
    return filter_records(tenant.pk, query_dict)


def test_the_first_page_is_the_newest_with_a_next_cursor_and_no_previous(acme, rows, as_tenant):
    with as_tenant(acme):
        records, limit, cursor = query(acme, limit="5")
        result = page(records, cursor, limit)
    assert result.rows == rows[:5]
    assert result.next_cursor is not None and result.previous_cursor is None


def test_following_next_walks_every_row_once_across_equal_timestamps(acme, rows, as_tenant):
    seen, cursor = [], None
    with as_tenant(acme):
        while True:
            records, limit, _ = query(acme, limit="5")
            result = page(records, cursor, limit)
            seen += result.rows
            if result.next_cursor is None:
                break
            cursor = result.next_cursor
    assert seen == rows


def test_previous_returns_the_page_before_in_the_same_order(acme, rows, as_tenant):
    with as_tenant(acme):
        records, limit, _ = query(acme, limit="4")
        first = page(records, None, limit)
        second = page(records, first.next_cursor, limit)
        third = page(records, second.next_cursor, limit)
        assert third.next_cursor is None and third.rows == rows[8:]
        back = page(records, third.previous_cursor, limit)
        assert back.rows == second.rows and back.previous_cursor is not None
        assert page(records, back.previous_cursor, limit) == first


def test_a_page_never_crosses_into_another_tenant(acme, globex, rows, as_tenant):
    with as_tenant(globex):
        records, limit, _ = query(globex)
        assert [r.tenant_id for r in page(records, None, limit).rows] == [globex.pk]


def test_a_cursor_round_trips():
    cursor = Cursor(T0 + timedelta(microseconds=7), 42, NEWER)
    assert Cursor.decode(cursor.encode()) == cursor
    assert "=" not in cursor.encode()


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "%%%",
        "o|2026-11-01T12:00:00+00:00",
        "o|2026-11-01T12:00:00+00:00|1|2",
        "z|2026-11-01T12:00:00+00:00|1",
        "o|2026-11-01T12:00:00|1",
        "o|2026-13-01T12:00:00+00:00|1",
        "o|2026-11-01T12:00:00+00:00|-1",
        "o|2026-11-01T12:00:00+00:00|9223372036854775808",
        "o|2026-11-01T12:00:00+00:00|٣",
        "o|2026-11-01T12:00:00+00:00|" + "1" * 5000,
    ],
)
def test_it_refuses_a_cursor_it_did_not_make(raw):
    encoded = base64.urlsafe_b64encode(raw.encode()).decode() if raw not in ("", "%%%") else raw + "x"
    with pytest.raises(ValidationFailed) as info:
        Cursor.decode(encoded)
    assert info.value.details == {"field": "cursor"}


def test_non_ascii_and_undecodable_cursors_are_refused():
    for value in ("é", "\x00", base64.urlsafe_b64encode(b"\xff\xfe").decode()):
        with pytest.raises(ValidationFailed):
            Cursor.decode(value)


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({}, 12),
        ({"provider": "a"}, 6),
        ({"status": "error"}, 3),
        ({"model": "fast"}, 6),
        ({"model": "gpt-4o-mini"}, 12),
        ({"request_id": "req-7"}, 1),
        ({"since": "2026-11-01T12:00:02Z"}, 6),
        ({"until": "2026-11-01T12:00:02"}, 6),
        ({"since": "2026-11-01", "until": "2026-11-02"}, 12),
        ({"provider": "", "status": "", "model": ""}, 12),
    ],
)
def test_filters_narrow_the_records(acme, rows, as_tenant, params, count):
    with as_tenant(acme):
        assert query(acme, **params).records.count() == count


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "²"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "1" * 5000}, "limit"),
        ({"status": "ok"}, "status"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"until": "tomorrow"}, "until"),
        ({"provider": "a\x00"}, "provider"),
        ({"request_id": "r" * 201}, "request_id"),
        ({"offset": "10"}, "offset"),
    ],
)
def test_garbage_parameters_are_validation_errors_naming_the_parameter(acme, params, field):
    with pytest.raises(ValidationFailed) as info:
        query(acme, **params)
    assert info.value.details == {"field": field}


def test_totals_cover_every_matching_record_not_one_page(acme, rows, as_tenant, django_assert_num_queries):
    with as_tenant(acme):
        records, _, _ = query(acme, limit="2")
        with django_assert_num_queries(1):
            totals = totals_of(records)
    assert totals == {
        "requests": 12, "errors": 3, "prompt_tokens": 120, "completion_tokens": 66, "total_tokens": 186,
        "cost": "0.01200000", "avg_latency_ms": 105.5,
    }  # fmt: skip


def test_a_page_is_one_query(acme, rows, as_tenant, django_assert_num_queries):
    with as_tenant(acme):
        records, limit, _ = query(acme, limit="5")
        first = page(records, None, limit)
        with django_assert_num_queries(1):
            page(records.select_related("token"), first.next_cursor, limit)
    assert Cursor.decode(first.next_cursor).direction == OLDER
