"""GET /api/v1/usage/: filters, pagination, totals, scoping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tenants.models import ApiToken
from usage.models import UsageRecord

URL = "/api/v1/usage/"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def log(acme, globex, make_provider, as_tenant):
    """Five acme records (three on a, one error on b, one on b by another token) and one of globex."""
    a, b = make_provider(acme, name="a"), make_provider(acme, name="b")
    token, _ = ApiToken.issue(acme, "app")
    other, _ = ApiToken.issue(acme, "batch")

    def rec(tenant, provider, minutes, status="success", tok=None, tokens=(10, 5), cost="0.001"):
        return UsageRecord(
            tenant=tenant, provider=provider, provider_name=provider.name if provider else "", status=status,
            status_code=200 if status == "success" else 502, token=tok, prompt_tokens=tokens[0],
            completion_tokens=tokens[1], total_tokens=sum(tokens), cost=Decimal(cost), latency_ms=100,
            attempts=[{"provider": provider.name if provider else "", "outcome": "success", "status_code": 200,
                       "latency_ms": 100.0, "error": ""}],
            created=T0 + timedelta(minutes=minutes),
        )  # fmt: skip

    with as_tenant(acme):
        UsageRecord.objects.bulk_create(
            [
                rec(acme, a, 0, tok=token),
                rec(acme, a, 1, tok=token),
                rec(acme, a, 2, tok=token),
                rec(acme, b, 3, status="error", tok=token, tokens=(0, 0), cost="0"),
                rec(acme, b, 4, tok=other),
            ]
        )
    g = make_provider(globex, name="a")
    with as_tenant(globex):
        UsageRecord.objects.create(
            **{f: getattr(rec(globex, g, 0), f) for f in ("tenant", "provider", "provider_name", "status", "created")}
        )
    return token, other


def test_it_lists_the_tenants_records_newest_first_with_totals(acme_api, log):
    body = acme_api.get(URL).json()
    assert body["count"] == 5
    assert [r["provider"] for r in body["results"]] == ["b", "b", "a", "a", "a"]
    assert body["totals"] == {
        "requests": 5, "errors": 1, "prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60,
        "cost": "0.00400000", "avg_latency_ms": 100.0,
    }  # fmt: skip
    first = body["results"][0]
    assert first["token"]["name"] == "batch" and first["attempts"][0]["outcome"] == "success"
    assert "prompt" in first and first["prompt"] is None


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("provider=a", 3),
        ("provider=zzz", 0),
        ("status=error", 1),
        ("status=success&provider=b", 1),
        ("since=2026-11-01T12:02:00Z", 3),
        ("until=2026-11-01T12:02:00Z", 2),
        ("since=2026-11-01T12:01:00%2B00:00&until=2026-11-01T12:03:00Z", 2),
        ("since=2026-11-02", 0),
    ],
)
def test_it_filters(acme_api, log, query, count):
    body = acme_api.get(f"{URL}?{query}").json()
    assert body["count"] == body["totals"]["requests"] == count
    assert len(body["results"]) == count


def test_it_filters_by_token_id_or_prefix(acme_api, log):
    token, other = log
    assert acme_api.get(URL, {"token": str(other.pk)}).json()["count"] == 1
    assert acme_api.get(URL, {"token": token.prefix}).json()["count"] == 4


def test_it_paginates_and_totals_cover_every_page(acme_api, log):
    page1 = acme_api.get(URL, {"limit": 2}).json()
    assert len(page1["results"]) == 2 and page1["previous"] is None
    assert page1["totals"]["requests"] == 5
    page2 = acme_api.get(page1["next"]).json()
    page3 = acme_api.get(page2["next"]).json()
    assert page3["next"] is None and len(page3["results"]) == 1
    ids = [r["id"] for p in (page1, page2, page3) for r in p["results"]]
    assert len(set(ids)) == 5
    assert acme_api.get(page2["previous"]).json()["results"] == page1["results"]


@pytest.mark.parametrize(
    "query",
    [
        "status=ok",
        "since=yesterday",
        "until=2026-13-01",
        "limit=0",
        "limit=501",
        "limit=ten",
        "offset=-1",
        "colour=red",
    ],
)
def test_it_rejects_bad_filters(acme_api, log, query):
    r = acme_api.get(f"{URL}?{query}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"


def test_a_completions_token_may_not_read_usage(acme_completions_api, log):
    assert acme_completions_api.get(URL).status_code == 403


def test_without_a_token_it_is_401(client, log):
    assert client.get(URL).status_code == 401


def test_carol_sees_only_globex(globex_api, log):
    body = globex_api.get(URL).json()
    assert body["count"] == 1 and body["results"][0]["provider"] == "a"
    assert globex_api.get(URL, {"provider": "b"}).json()["count"] == 0


def test_it_runs_a_fixed_number_of_queries(acme_api, log, django_assert_max_num_queries):
    with django_assert_max_num_queries(10):
        acme_api.get(URL, {"limit": 500})
