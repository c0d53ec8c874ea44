"""GET /api/v1/usage/ (filters, keyset pages, totals, scoping) and GET /api/v1/usage/{id}/
(one record with its routing trace)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tenants.models import ApiToken
from usage.models import UsageRecord

URL = "/api/v1/usage/"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


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
        "offset=5",
        "colour=red",
        "limit=²",
        "limit=٣",
        "limit=" + "9" * 5000,
        "limit=-1",
        "limit=1.5",
        "provider=a%00b",
        "model=" + "m" * 201,
        "since=0001-01-01T00:00:00%2B05:00",
        "since=2026-11-01T12:00:00%2B99:00",
        "until=99999-01-01",
        "cursor=garbage",
        "cursor=%00",
        "cursor=" + b64("x|2026-11-01T12:00:00+00:00|1"),
        "cursor=" + b64("o|2026-11-01T12:00:00|1"),
        "cursor=" + b64("o|2026-11-01T12:00:00+00:00|" + "9" * 25),
        "cursor=" + b64("o|2026-11-01T12:00:00+00:00|²"),
        "cursor=" + b64("o|yesterday|1"),
        "request_id=%00",
    ],
)
def test_it_rejects_bad_filters(acme_api, log, query):
    r = acme_api.get(f"{URL}?{query}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"]["field"] == query.split("=")[0]


def test_a_token_filter_that_is_not_an_id_is_a_prefix_and_matches_nothing(acme_api, log):
    for value in ("²", "9" * 30, "tok_"):
        r = acme_api.get(URL, {"token": value})
        assert r.status_code == 200 and r.json()["count"] == 0, value


def test_it_filters_by_model_asked_for_or_served_and_by_request_id(acme, acme_api, as_tenant):
    with as_tenant(acme):
        UsageRecord.objects.create(tenant=acme, status="success", model="gpt-4o-mini", model_requested="fast",
                                   request_id="req-1")  # fmt: skip
        UsageRecord.objects.create(tenant=acme, status="success", model="gpt-4o", request_id="req-2")
    assert acme_api.get(URL, {"model": "fast"}).json()["count"] == 1
    assert acme_api.get(URL, {"model": "gpt-4o-mini"}).json()["count"] == 1
    assert acme_api.get(URL, {"model": "gpt-4o"}).json()["count"] == 1
    (row,) = acme_api.get(URL, {"request_id": "req-2"}).json()["results"]
    assert row["model"] == "gpt-4o" and row["request_id"] == "req-2"


def test_an_empty_filter_is_no_filter(acme_api, log):
    body = acme_api.get(URL, {"provider": "", "status": "", "since": "", "cursor": "", "limit": ""}).json()
    assert body["count"] == 5


def test_keyset_pages_walk_records_sharing_a_timestamp_once_each(acme, acme_api, as_tenant):
    with as_tenant(acme):
        UsageRecord.objects.bulk_create(
            [UsageRecord(tenant=acme, status="success", created=T0 + timedelta(seconds=i // 3)) for i in range(10)]
        )
    seen, url, pages = [], URL + "?limit=3", 0
    while url:
        body = acme_api.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url, pages = body["next"], pages + 1
    with as_tenant(acme):
        expected = list(
            UsageRecord.objects.filter(tenant=acme).order_by("-created", "-id").values_list("pk", flat=True)
        )
    assert seen == expected and pages == 4
    assert "cursor=" in acme_api.get(URL, {"limit": 3}).json()["next"]


def test_previous_walks_back_to_the_newest_page(acme_api, log):
    page1 = acme_api.get(URL, {"limit": 2}).json()
    page2 = acme_api.get(page1["next"]).json()
    page3 = acme_api.get(page2["next"]).json()
    back2 = acme_api.get(page3["previous"]).json()
    assert back2["results"] == page2["results"]
    back1 = acme_api.get(back2["previous"]).json()
    assert back1["results"] == page1["results"] and back1["previous"] is None and back1["next"] == page1["next"]


def test_filters_hold_across_pages(acme_api, log):
    page1 = acme_api.get(URL, {"provider": "a", "limit": 2}).json()
    page2 = acme_api.get(page1["next"]).json()
    assert [r["provider"] for r in page1["results"] + page2["results"]] == ["a", "a", "a"]
    assert page2["next"] is None and page2["count"] == 3


def test_one_record_comes_with_its_trace(acme, acme_api, as_tenant, log):
    trace = {"pool": "all providers", "options": {"preferred_provider": None, "weights": {}, "disable_failover": False},
             "candidates": [{"provider": "a", "excluded": None}, {"provider": "b", "excluded": "drained",
                                                                      "why": "drained by an operator"}],
             "draw": {"method": "weighted", "among": [{"provider": "a", "weight": 50}], "total": 50, "point": 3.2,
                      "chosen": "a"}}  # fmt: skip
    with as_tenant(acme):
        record = UsageRecord.objects.create(tenant=acme, status="success", provider_name="a", trace=trace)
    r = acme_api.get(f"{URL}{record.pk}/")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == record.pk and body["provider"] == "a" and body["trace"] == trace
    assert "trace" not in acme_api.get(URL).json()["results"][0]  # the list stays light


def test_a_record_made_before_traces_has_an_empty_one(acme, acme_api, as_tenant):
    with as_tenant(acme):
        record = UsageRecord.objects.create(tenant=acme, status="success")
    assert acme_api.get(f"{URL}{record.pk}/").json()["trace"] == {}


@pytest.mark.parametrize("record_id", ["abc", "0", "-1", "²", "9" * 19, "9" * 40, "1.0"])
def test_a_missing_or_garbage_id_is_a_404_envelope(acme_api, log, record_id):
    r = acme_api.get(f"{URL}{record_id}/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_another_tenants_record_is_a_404_envelope(globex, globex_api, acme_api, as_tenant, log):
    with as_tenant(globex):
        theirs = UsageRecord.objects.get(tenant=globex)
    r = acme_api.get(f"{URL}{theirs.pk}/")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert globex_api.get(f"{URL}{theirs.pk}/").status_code == 200


def test_a_completions_token_may_not_read_one_record(acme_completions_api, acme, as_tenant, log):
    with as_tenant(acme):
        record = UsageRecord.objects.filter(tenant=acme).first()
    assert acme_completions_api.get(f"{URL}{record.pk}/").status_code == 403


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
