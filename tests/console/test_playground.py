"""The playground (console:playground): operators send a prompt with routing options
through the router and read the answer and the route as server-sent events."""

from __future__ import annotations

import json
import warnings

import httpx
import pytest
from django.urls import reverse

from usage.models import UsageRecord
from usage.writer import writer as usage_writer

URL = reverse("console:playground")


def events_of(response) -> list[tuple[str, dict]]:
    """The SSE events of a streamed response (the test client consumes the async body
    in one go, and says so with a warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "StreamingHttpResponse must consume asynchronous iterators")
        text = b"".join(response).decode()
    return parse(text)


def parse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def answer_of(events) -> str:
    return "".join(data["delta"] for name, data in events if name == "chunk")


def records(tenant, as_tenant) -> list[UsageRecord]:
    usage_writer.flush()
    with as_tenant(tenant):
        return list(UsageRecord.objects.filter(tenant=tenant).order_by("created", "pk"))


def test_an_operator_gets_the_form_with_every_provider_and_its_weight(dave_client, two):
    r = dave_client.get(URL)
    assert r.status_code == 200
    html = r.content.decode()
    assert 'name="prompt"' in html and 'name="system"' in html and 'name="max_tokens"' in html
    assert 'name="temperature"' in html and 'name="disable_failover"' in html
    a, b = two
    assert f'name="weight_{a.pk}"' in html and f'name="weight_{b.pk}"' in html
    assert '<option value="b">b</option>' in html and "js/playground.js" in html
    assert "sk-test-aaaa1111" not in html


def test_a_viewer_may_not_use_the_playground(bob_client, two, upstream):
    assert bob_client.get(URL).status_code == 403
    assert bob_client.post(URL, {"prompt": "hi"}).status_code == 403
    assert upstream.stats() == {}


def test_without_providers_it_says_to_add_one(alice_client, acme):
    assert "No providers yet." in alice_client.get(URL).content.decode()


def test_it_streams_the_answer_then_the_route_and_links_to_the_request_log(dave_client, two, acme, as_tenant):
    r = dave_client.post(URL, {"prompt": "hello there", "system": "be brief", "max_tokens": "50", "temperature": "0.2"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/event-stream")
    events = events_of(r)
    name, start = events[0]
    assert name == "start" and start["request_id"] == r["X-Request-Id"]
    assert start["log_url"] == f"{reverse('console:requests')}?request_id={start['request_id']}"
    assert answer_of(events) == "Echo: hello there"
    name, done = events[-1]
    assert name == "done" and done["provider"] == "a"
    assert [a["outcome"] for a in done["route"]["attempts"]] == ["success"]
    (record,) = records(acme, as_tenant)
    assert record.request_id == start["request_id"] and record.token is None and record.stream
    assert record.trace["draw"]["chosen"] == "a"
    log = dave_client.get(start["log_url"]).content.decode()
    assert reverse("console:request_detail", args=[record.pk]) in log and 'data-total="requests">1<' in log


def test_the_routing_options_reach_the_router(dave_client, two, upstream, acme, as_tenant):
    a, b = two
    events = events_of(dave_client.post(URL, {"prompt": "hi", "preferred_provider": "b", f"weight_{a.pk}": "0"}))
    assert events[-1][1]["provider"] == "b" and upstream.counts("a") == {}
    (record,) = records(acme, as_tenant)
    assert record.trace["options"] == {
        "preferred_provider": "b", "weights": {"a": 0.0}, "disable_failover": False, "model": None
    }
    assert record.trace["draw"]["method"] == "preferred"


def test_it_fails_over_before_the_first_chunk_and_shows_both_attempts(dave_client, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="500")
    events = events_of(dave_client.post(URL, {"prompt": "hello"}))
    name, done = events[-1]
    assert name == "done" and done["provider"] == "b"
    assert [(x["provider"], x["outcome"]) for x in done["route"]["attempts"]] == [("a", "http_500"), ("b", "success")]


def test_a_failure_before_the_first_chunk_is_an_error_event_with_the_attempts(
    dave_client, two, upstream, acme, as_tenant
):
    upstream.configure("a", failure_rate=1.0, failure_kind="503")
    events = events_of(dave_client.post(URL, {"prompt": "hello", "disable_failover": "on"}))
    assert [name for name, _ in events] == ["start", "error"]
    error = events[-1][1]["error"]
    assert error["code"] == "upstream_error" and error["message"]
    assert [(x["provider"], x["outcome"]) for x in error["details"]["attempts"]] == [("a", "http_503")]
    assert upstream.counts("b") == {}
    (record,) = records(acme, as_tenant)
    assert record.status == "error" and record.request_id == events[0][1]["request_id"]


def test_a_stream_broken_midway_ends_with_the_error_event(dave_client, two, upstream):
    upstream.configure("a", failure_rate=1.0, failure_kind="cut", cut_after=2)
    events = events_of(dave_client.post(URL, {"prompt": "one two three four five six"}))
    assert events[1][0] == "chunk"
    name, data = events[-1]
    assert name == "error" and data["error"]["code"] == "upstream_error"
    assert upstream.counts("b") == {}


def test_no_eligible_provider_is_an_error_event(dave_client, acme, make_provider, upstream):
    make_provider(acme, name="down", base_url=upstream.base_url("down"), health_status="unhealthy")
    events = events_of(dave_client.post(URL, {"prompt": "hello"}))
    assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "no_healthy_provider"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hi", "max_tokens": "0"}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": "²"}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": "1" * 5000}, "max_tokens"),
        ({"prompt": "hi", "temperature": "3"}, "temperature"),
        ({"prompt": "hi", "temperature": "nan"}, "temperature"),
        ({"prompt": "hi", "temperature": "inf"}, "temperature"),
        ({"prompt": "hi", "preferred_provider": "globex-a"}, "preferred_provider"),
        ({"prompt": "x" * 100_001}, "prompt"),
    ],
)
def test_a_bad_form_is_a_400_envelope_naming_the_field_and_routes_nothing(
    dave_client, two, upstream, acme, as_tenant, data, field
):
    r = dave_client.post(URL, data)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]["fields"]
    assert upstream.stats() == {} and records(acme, as_tenant) == []


@pytest.mark.parametrize("value", ["-1", "101", "heavy", "nan"])
def test_a_bad_weight_override_is_refused(dave_client, two, upstream, value):
    a, _b = two
    r = dave_client.post(URL, {"prompt": "hi", f"weight_{a.pk}": value})
    assert r.status_code == 400 and f"weight_{a.pk}" in r.json()["error"]["details"]["fields"]
    assert upstream.stats() == {}


def test_another_tenants_provider_cannot_be_preferred(dave_client, two, globex, make_provider, upstream):
    make_provider(globex, name="theirs", base_url=upstream.base_url("theirs"))
    r = dave_client.post(URL, {"prompt": "hi", "preferred_provider": "theirs"})
    assert r.status_code == 400 and upstream.stats() == {}


@pytest.mark.django_db(transaction=True)
def test_it_streams_under_the_real_asgi_stack(gateway, acme, dave, two, as_tenant):
    """uvicorn, the console's sync middleware and the async body: what a browser gets."""
    from tests.console.conftest import logged_in

    django_client = logged_in(dave)
    django_client.get(URL)  # a CSRF cookie and token
    cookies = {
        "sessionid": django_client.cookies["sessionid"].value,
        "csrftoken": django_client.cookies["csrftoken"].value,
    }
    with httpx.Client(base_url=gateway.url, cookies=cookies, timeout=30) as browser:
        r = browser.post(
            URL,
            data={"prompt": "over the wire", "csrfmiddlewaretoken": cookies["csrftoken"]},
            headers={"Referer": gateway.url + URL, "Origin": gateway.url},
        )
    assert r.status_code == 200, r.text[:300]
    events = parse(r.text)
    assert answer_of(events) == "Echo: over the wire" and events[-1][0] == "done"
    (record,) = records(acme, as_tenant)
    assert record.request_id == events[0][1]["request_id"]
