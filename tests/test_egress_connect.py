"""Issue 10, Must show 2: hostile base URLs are refused when saved (API and console form:
`invalid_config`) and, for configs that reached the database anyway, when dialled on
every outbound path (completion, stream, the OpenAI-compatible face, probe, the
console's test connection) with a clear upstream error; a listener on 127.0.0.1 standing
in for the target counts zero connections while private base URLs are not allowed, and
some once they are (so these tests can fail).

Configs are inserted with make_provider (no validation), as an old row, a restore or a
direct SQL write would; the rule set's refusals are tested on their own below.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest
from django.test import Client
from django.urls import reverse

from providers import egress, registry
from providers.adapters.base import CompletionRequest, Message, ProviderConnectError, ProviderError
from providers.adapters.http import MESSAGE_CHARS, EgressConnector, get_session
from providers.models import ProviderConfig
from tests.conftest import make_token
from tests.fixtures_upstream import make_config

KEY = "sk-test-egress-0123456789abcdef"
REFUSED_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Listener:
    """A TCP server on 127.0.0.1 standing in for whatever a hostile URL aims at: counts
    the connections it accepts and answers each with `response`, then closes."""

    def __init__(self, response: bytes = REFUSED_503):
        self.response = response
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="egress-target", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(self.response)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def target():
    listener = Listener()
    yield listener
    listener.stop()


@pytest.fixture
def dave_client(dave):
    """dave, an operator of acme, logged in to the console."""
    client = Client()
    client.force_login(dave)
    return client


@pytest.fixture
def no_private(settings):
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = False


# (provider name, base URL ({port}: the listener's), what the refusal names). The first
# group is refused whatever the setting; the second only while private URLs are not allowed.
ALWAYS = [
    ("meta-dotted", "http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata address"),
    ("meta-decimal", "http://2852039166/v1", "169.254.169.254 is a cloud metadata address"),
    ("meta-octal", "http://0251.0376.0251.0376/v1", "169.254.169.254 is a cloud metadata address"),
    ("meta-hex", "http://0xa9fea9fe/v1", "169.254.169.254 is a cloud metadata address"),
    (
        "meta-mapped",
        "http://[::ffff:169.254.169.254]/v1",
        "an IPv4-mapped IPv6 form of 169.254.169.254, a cloud metadata address",
    ),
    ("meta-aws-v6", "http://[fd00:ec2::254]/latest", "fd00:ec2::254 is a cloud metadata address"),
    ("meta-oracle", "http://192.0.0.192/opc/v2", "192.0.0.192 is a cloud metadata address"),
    ("meta-alibaba", "http://100.100.100.200/latest", "100.100.100.200 is a cloud metadata address"),
    ("link-local-v6", "http://[fe80::1%25eth0]/v1", "fe80::1 is a link-local address"),
    ("fragment-trick", "http://169.254.169.254/#", "169.254.169.254 is a cloud metadata address"),
    ("zero", "http://0:{port}/v1", "0.0.0.0 is an unspecified address"),
    ("zero-dotted", "http://0.0.0.0:{port}/v1", "0.0.0.0 is an unspecified address"),
    ("zero-v6", "http://[::]:{port}/v1", ":: is an unspecified address"),
    ("reserved", "http://240.0.0.1/v1", "240.0.0.1 is a reserved address"),
    ("multicast", "http://224.0.0.1/v1", "224.0.0.1 is a multicast address"),
    ("scheme-file", "file:///etc/passwd", "only http:// and https:// URLs are dialled"),
    ("scheme-gopher", "gopher://127.0.0.1:{port}/_SET", "only http:// and https:// URLs are dialled"),
    ("scheme-ftp", "ftp://127.0.0.1:{port}/", "only http:// and https:// URLs are dialled"),
]
PRIVATE = [
    ("loopback", "http://127.0.0.1:{port}/v1", "127.0.0.1 is a loopback address"),
    ("short-loopback", "http://127.1:{port}/v1", "127.0.0.1 is a loopback address"),
    ("decimal-loopback", "http://2130706433:{port}/v1", "127.0.0.1 is a loopback address"),
    ("hex-loopback", "http://0x7f.0x0.0x0.0x1:{port}/v1", "127.0.0.1 is a loopback address"),
    (
        "mapped-loopback",
        "http://[::ffff:127.0.0.1]:{port}/v1",
        "an IPv4-mapped IPv6 form of 127.0.0.1, a loopback address",
    ),
    ("localhost", "http://LocalHost:{port}/v1", "is a loopback address"),
    ("credentials", "http://user:pw@127.0.0.1:{port}/v1", "credentials in the URL are never sent"),
    ("query-trick", "http://127.0.0.1:{port}/v1?", "127.0.0.1 is a loopback address"),
    ("cgnat", "http://100.64.0.1:{port}/v1", "100.64.0.1 is a CGNAT (shared) address"),
    ("private", "http://10.0.0.1:{port}/v1", "10.0.0.1 is a private address"),
]
HOSTILE = ALWAYS + PRIVATE


def insert_hostile(acme, make_provider, port: int, table=HOSTILE) -> None:
    for name, url, _reason in table:
        make_provider(acme, name=name, type="openai", base_url=url.format(port=port), api_key=KEY, timeout_seconds=5)


# --- the outbound paths, each returning the error text a client or operator sees ------------------


def attempt_error(body: dict) -> str:
    assert body["error"]["code"] == "upstream_error", body
    (attempt,) = body["error"]["details"]["attempts"]
    assert attempt["outcome"] == "connect_error", attempt
    return attempt["error"]


def one_provider(name: str, **body) -> dict:
    """A completion body for provider `name` alone: preferred, no failover (the others
    are hostile too, and their circuits should not open on this test's traffic)."""
    return {"prompt": "hi", "preferred_provider": name, "disable_failover": True, **body}


def via_completion(client, name: str) -> str:
    r = client.post("/api/v1/completions", json=one_provider(name))
    assert r.status_code == 502, r.text
    return attempt_error(r.json())


def via_stream(client, name: str) -> str:
    r = client.post("/api/v1/completions", json=one_provider(name, stream=True))
    assert r.status_code == 502 and r.headers["content-type"] == "application/json", r.text
    return attempt_error(r.json())


def via_openai_face(client, name: str) -> str:
    body = {"model": name, "disable_failover": True, "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 502, r.text
    return attempt_error(r.json())


def via_openai_face_stream(client, name: str) -> str:
    body = {"model": name, "stream": True, "disable_failover": True, "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 502 and r.headers["content-type"].startswith("application/json"), r.text
    return attempt_error(r.json())


def via_probe(client, name: str) -> str:
    r = client.post(f"/api/v1/providers/{name}/health-check/")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "unhealthy", body
    assert len(body["error"]) <= MESSAGE_CHARS and "\n" not in body["error"]
    return body["error"]


PATHS = [via_completion, via_stream, via_openai_face, via_openai_face_stream, via_probe]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_hostile_configs_in_the_database_are_refused_when_dialled(
    gateway, acme, make_provider, target, no_private, path
):
    insert_hostile(acme, make_provider, target.port)
    with gateway.client(make_token(acme)) as client:
        for name, _url, reason in HOSTILE:
            error = path(client, name)
            assert reason in error, (name, error)
            assert error.startswith(("egress refused: ", "invalid base URL: ")), error
            assert KEY not in error
    assert target.accepted == 0


@pytest.mark.django_db(transaction=True)
def test_with_private_urls_allowed_the_listener_is_reached_and_the_rest_still_refused(
    gateway, acme, make_provider, target, settings
):
    """The counterpart that shows the listener can count: loopback spellings reach it
    once the operator allows private base URLs; unspecified and metadata never do."""
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True
    insert_hostile(acme, make_provider, target.port)
    with gateway.client(make_token(acme)) as client:
        for name in ("loopback", "short-loopback", "decimal-loopback", "localhost"):
            before = target.accepted
            r = client.post("/api/v1/completions", json=one_provider(name))
            assert r.status_code == 502 and "http_503" in r.text, r.text
            assert target.accepted > before, name
        reached = target.accepted
        for name, _url, reason in ALWAYS:
            assert reason in via_completion(client, name)
    assert target.accepted == reached


@pytest.mark.django_db
def test_the_consoles_test_connection_refuses_hostile_configs(dave_client, acme, make_provider, target, no_private):
    insert_hostile(acme, make_provider, target.port)
    for name, _url, reason in HOSTILE:
        html = dave_client.post(reverse("console:provider_test", kwargs={"name": name}), HTTP_HX_REQUEST="true")
        assert html.status_code == 200
        error = re.search(r'<span class="probe-error">([^<]+)</span>', html.content.decode())
        assert error and reason.replace("'", "&#x27;") in error.group(1), (name, html.content.decode()[:2000])
    assert target.accepted == 0


# --- DNS: rebinding and the cache -------------------------------------------------------------------


@pytest.fixture
def rebinding(monkeypatch):
    """`rebind.axonflow.test` answers a public address the first time it is looked up
    (the save) and 127.0.0.1 after that (every dial); other names resolve as usual."""
    real = egress.lookup
    seen: list[str] = []

    def lookup(host, port, family=0, flags=0):
        if host.rstrip(".") != "rebind.axonflow.test":
            return real(host, port, family, flags)
        seen.append(host)
        return [(socket.AF_INET, "93.184.215.14" if len(seen) == 1 else "127.0.0.1", port)]

    monkeypatch.setattr(egress, "lookup", lookup)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_name_that_answers_public_then_private_is_refused_when_dialled(gateway, acme, target, rebinding, settings):
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = False
    base_url = f"http://rebind.axonflow.test:{target.port}/v1"
    with gateway.client(make_token(acme)) as client:
        body = {"name": "rebound", "type": "openai", "model": "gpt-4o-mini", "api_key": KEY, "base_url": base_url}
        r = client.post("/api/v1/providers/", json=body)
        assert r.status_code == 201, r.text  # the save-time answer was public
        for path in PATHS:
            assert "egress refused: 127.0.0.1 is a loopback address" in path(client, "rebound"), path.__name__
        assert len(rebinding) > 1 and target.accepted == 0
        settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True  # the same answer, allowed: it is dialled
        client.post("/api/v1/completions", json=one_provider("rebound"))
    assert target.accepted == 1


def lookup_to(address: str):
    return lambda host, port, family=0, flags=0: [(socket.AF_INET, address, port)]


async def test_a_cached_dns_answer_is_checked_again_each_time_it_is_used(target, settings, monkeypatch, http_session):
    """ttl_dns_cache keeps the connector's answer for minutes; the check runs on every
    answer the connector uses, so what the setting says now decides."""
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True
    monkeypatch.setattr(egress, "lookup", lookup_to("127.0.0.1"))
    adapter = registry.build(make_config("openai", f"http://cached.axonflow.test:{target.port}/v1", KEY))
    request = CompletionRequest(messages=[Message("user", "hi")])
    with pytest.raises(ProviderError) as first:
        await adapter.complete(request)
    assert first.value.status_code == 503 and target.accepted == 1  # dialled, answer cached
    monkeypatch.setattr(egress, "lookup", lambda *a, **k: pytest.fail("the cached answer should be used"))
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = False
    with pytest.raises(ProviderConnectError) as second:
        await adapter.complete(request)
    assert second.value.message == (
        "egress refused: 127.0.0.1 is a loopback address, and private base URLs are not allowed on this server"
    )
    assert target.accepted == 1


async def test_a_resolver_answer_with_any_refused_address_is_refused_whole(
    target, no_private, monkeypatch, http_session
):
    def mixed(host, port, family=0, flags=0):
        return [(socket.AF_INET, "93.184.215.14", port), (socket.AF_INET, "169.254.169.254", port)]

    monkeypatch.setattr(egress, "lookup", mixed)
    adapter = registry.build(make_config("openai", "http://mixed.axonflow.test/v1", KEY))
    with pytest.raises(ProviderConnectError, match="egress refused: 169.254.169.254 is a cloud metadata address"):
        await adapter.complete(CompletionRequest(messages=[Message("user", "hi")]))


async def test_the_provider_session_uses_the_guarded_connector_and_ignores_proxy_variables(
    upstream, target, monkeypatch, http_session
):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{target.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = get_session()
    assert isinstance(session.connector, EgressConnector) and session.trust_env is False
    adapter = registry.build(make_config("openai", upstream.base_url("p", "openai"), KEY, name="p"))
    response = await adapter.complete(CompletionRequest(messages=[Message("user", "hi")]))
    assert response.content == "Echo: hi"
    assert target.accepted == 0 and upstream.counts("p")["chat"] == 1


# --- redirects ------------------------------------------------------------------------------------


def redirect_to(location: str) -> bytes:
    return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()


@pytest.fixture
def redirector(target):
    """An allowed upstream (on loopback: private URLs are allowed in these tests) that
    answers every request with a 302 to `target`, the stand-in for the metadata service."""
    listener = Listener(redirect_to(f"http://127.0.0.1:{target.port}/latest/meta-data/"))
    yield listener
    listener.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_a_redirect_is_never_followed_on_any_path(gateway, acme, make_provider, redirector, target, path):
    make_provider(acme, name="redirects", base_url=f"http://127.0.0.1:{redirector.port}/v1", api_key=KEY)
    with gateway.client(make_token(acme)) as client:
        if path is via_probe:
            r = client.post("/api/v1/providers/redirects/health-check/")
            assert r.json()["status"] == "unhealthy"
            assert r.json()["error"] == "HTTP 302: redirects are not followed"
        else:
            route = "/v1/chat/completions" if "openai" in path.__name__ else "/api/v1/completions"
            stream = "stream" in path.__name__
            body = {"model": "redirects", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            r = client.post(route, json=body)
            assert r.status_code == 502 and "redirects are not followed" in r.text, r.text
    assert redirector.accepted >= 1 and target.accepted == 0


async def test_a_redirect_to_the_metadata_address_fails_over_and_is_not_followed(upstream, http_session):
    listener = Listener(redirect_to("http://169.254.169.254/latest/meta-data/iam/security-credentials/"))
    try:
        adapter = registry.build(make_config("openai", f"http://127.0.0.1:{listener.port}/v1", KEY, name="r"))
        with pytest.raises(ProviderError) as caught:
            await adapter.complete(CompletionRequest(messages=[Message("user", "hi")]))
    finally:
        listener.stop()
    error = caught.value
    assert (error.status_code, error.retryable, error.message) == (302, True, "redirects are not followed")
    assert "169.254" not in str(error)


# --- what an upstream says ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_health_check_answers_one_short_line_not_what_the_upstream_sent(acme_api, acme, make_provider, upstream):
    """The issue found the health check reflecting the first 500 characters of whatever
    answered (an internal admin page, a metadata listing): now one line of at most 200."""
    make_provider(acme, name="chatty", base_url=upstream.base_url("chatty", "openai"), api_key=KEY)
    page = "<html>\n<body>\n" + "ami-id\ninstance-id\niam/security-credentials/admin-role\n" * 40 + "</body>"
    upstream.configure("chatty", failure_rate=1.0, failure_kind="503", error_message=page)
    body = acme_api.post("/api/v1/providers/chatty/health-check/").json()
    assert body["status"] == "unhealthy" and body["error"].startswith("HTTP 503: <html> <body> ami-id")
    assert len(body["error"]) <= 200 and "\n" not in body["error"] and KEY not in body["error"]


# --- save time: the API and the console form ---------------------------------------------------


def save_reason(url: str, reason: str) -> str:
    """What the save-time message says for a row of the connect-time table."""
    if "?" in url or "#" in url:
        return "'?' or '#'"
    if "@" in url:
        return "credentials"
    if url.startswith(("file:", "gopher:", "ftp:")):
        return "http:// or https://"
    return reason.split(" is ")[-1].split(", a ")[-1]


SAVE_TIME = [(url.format(port=8100), save_reason(url, reason)) for _name, url, reason in HOSTILE] + [
    ("http://169.254.169.254#@api.openai.com/v1", "'?' or '#'"),
    ("https://api.openai.com/v1?x=", "'?' or '#'"),
    ("http://api.openai.com@169.254.169.254/v1", "credentials"),
    ("http://169.254.169.254\\@api.openai.com/v1", "backslashes"),
    ("http://metadata.google.internal/computeMetadata/v1", "cloud metadata"),
    ("https://0xa9.0376.43518/v1", "cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/v1", "cloud metadata"),
    ("http://[64:ff9b::a9fe:a9fe]/v1", "cloud metadata"),
    ("http://localhost:11434", "loopback"),
]


def providers_of(tenant, as_tenant) -> list:
    with as_tenant(tenant):
        return list(ProviderConfig.objects.filter(tenant=tenant).values_list("name", "base_url"))


@pytest.mark.django_db
@pytest.mark.parametrize("url, reason", SAVE_TIME)
def test_the_api_refuses_hostile_base_urls_with_invalid_config(acme_api, acme, as_tenant, no_private, url, reason):
    body = {"name": "evil", "type": "custom", "model": "m", "api_key": KEY, "base_url": url}
    r = acme_api.post("/api/v1/providers/", body)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert (error["code"], error["details"]) == ("invalid_config", {"field": "base_url"})
    assert reason in error["message"], error["message"]
    assert KEY not in r.content.decode()
    assert providers_of(acme, as_tenant) == []


@pytest.mark.django_db
def test_the_api_refuses_a_hostile_base_url_on_update_and_changes_nothing(acme_api, acme, as_tenant, make_provider):
    make_provider(acme, name="main", base_url="https://api.openai.com/v1")
    for url in ("http://2852039166/v1", "http://[::ffff:169.254.169.254]/v1", "gopher://x/"):
        r = acme_api.patch("/api/v1/providers/main/", {"base_url": url})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    assert providers_of(acme, as_tenant) == [("main", "https://api.openai.com/v1")]


CONSOLE_FORM = {
    "name": "evil", "type": "custom", "model": "m", "api_key": KEY, "secret_ref": "", "settings": "",
    "enabled": "on", "priority": "0", "weight": "50", "rate_limit": "0", "timeout_seconds": "30",
    "cost_input_per_1k": "", "cost_output_per_1k": "",
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("url, reason", SAVE_TIME[::3])
def test_the_console_form_refuses_hostile_base_urls_next_to_the_field(
    dave_client, acme, as_tenant, no_private, url, reason
):
    r = dave_client.post(reverse("console:provider_add"), {**CONSOLE_FORM, "base_url": url})
    assert r.status_code == 400
    html = r.content.decode()
    field = re.search(r'<div class="field has-error" id="field-base_url">(.*?)</div>', html, re.S)
    assert field, html[:3000]
    shown = re.sub(r"&#x27;", "'", field.group(1))
    assert reason in shown, shown
    assert KEY not in html
    assert providers_of(acme, as_tenant) == []


@pytest.mark.django_db
def test_the_console_form_accepts_loopback_when_the_operator_allows_it(dave_client, acme, as_tenant):
    r = dave_client.post(reverse("console:provider_add"), {**CONSOLE_FORM, "base_url": "http://127.1:11434/v1"})
    assert r.status_code == 302, r.content.decode()[:2000]
    assert providers_of(acme, as_tenant) == [("evil", "http://127.0.0.1:11434/v1")]
