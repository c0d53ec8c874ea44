"""Tenant isolation, as a matrix (issue 10, "Must show 1"): acme (tenant A) and globex
(tenant B) each hold providers, model routes with targets, tokens, usage records with
their routing traces, health results, metric buckets, audit entries and members
(tests/console/conftest.py make_world). Acme's admin user and acme's tokens then try to
read, change and delete globex's objects through

- every API endpoint the URL resolver knows under /api/ (each method its view has),
- every console URL of the `console` namespace (GET, POST, htmx POST) and the switcher,
- the OpenAI-compatible /v1 (a raw ASGI app outside the resolver, listed here),
- the live board's WebSocket.

Every attempt on an object is a 404 (403 where a token's scope refuses first); lists
and pages never show globex's data; and the whole database, every table of both
tenants read inside each tenant's RLS context, is unchanged. The URL lists come from
the resolver and each URL keyword must be known here, so a new URL cannot be forgotten.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connections
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from routing.health import db_thread, probes, status
from tenants.models import TokenScope
from tenants.rls import tenant_context
from tests.conftest import ApiClient, make_token
from tests.console.conftest import World, logged_in, make_world
from usage.writer import writer as usage_writer

METHODS = ("get", "post", "put", "patch", "delete", "options")
READS = ("head", "options")  # answered by every view without naming anything: no attempts to write down
ORIGIN = (b"origin", b"http://testserver")


# --- the URLs, from the resolver ---------------------------------------------------------


def all_patterns() -> list[tuple[str, str, URLPattern]]:
    """(route, qualified name, pattern) of every URL Django serves, e.g.
    ("api/v1/providers/<str:name>/", "api:provider", <URLPattern>)."""
    found = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}:{pattern.namespace}".strip(":") if pattern.namespace else namespace
                walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            else:
                found.append((prefix + str(pattern.pattern), f"{namespace}:{pattern.name}".strip(":"), pattern))

    walk(get_resolver().url_patterns, "", "")
    return found


PATTERNS = all_patterns()
API = [(route, name, p) for route, name, p in PATTERNS if route.startswith("api/")]
CONSOLE = [(route, name, p) for route, name, p in PATTERNS if name.startswith("console:")]


def keywords(pattern: URLPattern) -> set[str]:
    return set(pattern.pattern.regex.groupindex)


def methods_of(pattern: URLPattern) -> list[str]:
    """The HTTP methods the API view answers (DRF and adrf views keep their class; a
    view with GET answers HEAD too)."""
    view = pattern.callback.cls
    return [m for m in METHODS if hasattr(view, m)] + (["head"] if hasattr(view, "get") else [])


def section(route: str) -> str:
    """The API area a route belongs to: "api/v1/providers/<str:name>/state/" -> "providers"."""
    return route.split("/")[2]


# What each URL keyword names, per API area: B's objects to aim at. A URL whose keyword
# is not here fails the matrix until it is taught what that keyword points to.
API_OBJECTS: dict[tuple[str, str], Callable[[World], list[Any]]] = {
    ("providers", "name"): lambda w: [w.provider.name, w.standby.name],
    ("models", "name"): lambda w: [w.route.name],
    ("tokens", "token_id"): lambda w: [w.token.pk, w.admin_token.pk],
    ("usage", "record_id"): lambda w: [w.record.pk],
}

# What a write to one object sends: a body that would succeed on acme's own object,
# so the only thing wrong with it is whose object it names. (mine, theirs) -> body.
API_WRITES: dict[tuple[str, str], Callable[[World, World], Any]] = {
    ("api:provider", "patch"): lambda a, b: {"weight": 1, "enabled": False},
    ("api:provider", "put"): lambda a, b: {"type": "openai", "model": "taken-over", "weight": 1},
    ("api:provider-health-check", "post"): lambda a, b: None,
    ("api:provider-state", "post"): lambda a, b: {"state": "drained", "reason": "cross-tenant attempt"},
    ("api:model", "put"): lambda a, b: {"targets": [{"provider": a.provider.name, "weight": 10}]},
}


@dataclass
class Attempt:
    """One request on a list endpoint that names B's objects. `status` is what it must
    answer; `empty` names the JSON list that must come back empty."""

    method: str
    data: Any = None
    status: int = 200
    code: str | None = None
    empty: str | None = None


def collection_attempts(a: World, b: World) -> dict[tuple[str, str], list[Attempt]]:
    """Every (endpoint without an object in its path, method): what acme tries there."""
    prompt = {"prompt": "hello"}
    return {
        ("schema", "get"): [Attempt("get")],
        ("api-docs", "get"): [Attempt("get")],
        ("api:providers", "get"): [Attempt("get")],
        ("api:providers", "post"): [
            Attempt("post", {"name": "mine", "type": "openai", "model": "m", "tenant": b.tenant.pk}, 400)
        ],
        ("api:status", "get"): [Attempt("get"), Attempt("get", {"window": "24h"})],
        ("api:completions", "post"): [  # `model` naming globex's objects: test_api_completions_... below
            Attempt("post", {**prompt, "preferred_provider": b.provider.name}, 400, "validation_error"),
            Attempt("post", {**prompt, "weights": {b.provider.name: 100}}, 400, "validation_error"),
            Attempt("post", {**prompt, "preferred_provider": b.standby.name, "stream": True}, 400, "validation_error"),
        ],
        ("api:routing-weights", "get"): [Attempt("get")],
        ("api:routing-weights", "put"): [Attempt("put", {"weights": {b.provider.name: 1}}, 400, "validation_error")],
        ("api:usage", "get"): [
            Attempt("get"),
            Attempt("get", {"provider": b.provider.name}, empty="results"),
            Attempt("get", {"model": b.route.name}, empty="results"),
            Attempt("get", {"token": b.token.pk}, empty="results"),
            Attempt("get", {"token": b.token.prefix}, empty="results"),
            Attempt("get", {"request_id": b.record.request_id}, empty="results"),
        ],
        ("api:audit", "get"): [
            Attempt("get"),
            Attempt("get", {"object_type": "provider", "object_id": b.provider.pk}, empty="results"),
            Attempt("get", {"object_name": b.provider.name}, empty="results"),
            Attempt("get", {"object_name": b.tenant.slug}, empty="results"),
        ],
        ("api:tokens", "get"): [Attempt("get")],
        ("api:tokens", "post"): [Attempt("post", {"name": "mine", "tenant": b.tenant.pk}, 400, "validation_error")],
        ("api:budgets", "get"): [Attempt("get")],
        # A budget on globex's token is refused as an unknown token; the set stays acme's.
        ("api:budgets", "put"): [
            Attempt("put", {"budgets": [{"name": "mine", "limit_usd": "1", "token_id": b.token.pk}]}, 400,
                    "validation_error"),
            Attempt("put", {"budgets": [{"name": b.budget.name, "limit_usd": "1"}], "tenant": b.tenant.pk}, 400,
                    "validation_error"),
        ],  # fmt: skip
        ("api:models", "get"): [Attempt("get")],
        ("api:models", "post"): [
            Attempt("post", {"name": "taken", "targets": [{"provider": b.provider.name}]}, 400),
            Attempt("post", {"name": "taken", "targets": [{"provider": b.standby.name}], "tenant": b.tenant.pk}, 400),
        ],
    }


# --- what B has, and whether any of it showed or changed -------------------------------


def markers_of(w: World, *members) -> set[str]:
    """Strings only B's data contains: none may appear in anything acme is shown, unless
    acme itself sent it (an unknown name echoed back in an error)."""
    found = {
        w.tenant.slug, w.tenant.name, w.provider.name, w.standby.name, w.standby.model, w.route.name,
        w.admin_token.name, w.token.prefix, w.admin_token.prefix, w.record.request_id, w.health.error, w.budget.name,
        *(m.username for m in members),
    }  # fmt: skip
    for name, pattern in ((n, p) for _, n, p in CONSOLE if keywords(p)):
        found.add(reverse(name, kwargs={k: w.url_kwargs()[k] for k in keywords(pattern)}))
    return found


def assert_shows_nothing_of(markers: set[str], sent: str, received: str, what: str) -> None:
    shown = sorted(m for m in markers if m not in sent and m in received)
    assert not shown, f"{what}: shows another tenant's {shown}"


# Columns that legitimately move when acme merely authenticates (login, token use).
VOLATILE = {"tenants_apitoken": {"last_used"}, "auth_user": {"last_login"}}


def database_state(*tenants) -> dict:
    """Every row of every table: tenant-owned tables per tenant, read inside that
    tenant's RLS context, and the shared ones (users, tenants) once. Queued usage and
    health writes are flushed first, so a write that is merely late counts too."""
    usage_writer.flush()
    db_thread.flush()
    models = [m for m in apps.get_models() if m._meta.managed and m is not Session]
    state: dict[tuple[str, str], list] = {}

    def rows(model, **where) -> list:
        drop = VOLATILE.get(model._meta.db_table, set())
        values = model._base_manager.filter(**where).order_by("pk").values()
        return [{k: v for k, v in row.items() if k not in drop} for row in values]

    for tenant in tenants:
        with tenant_context(tenant.pk):
            for model in models:
                if any(f.name == "tenant" for f in model._meta.fields):
                    state[(tenant.slug, model._meta.db_table)] = rows(model, tenant=tenant)
    with tenant_context(None):
        for model in models:
            if not any(f.name == "tenant" for f in model._meta.fields):
                state[("shared", model._meta.db_table)] = rows(model)
    return state


def changed(before: dict, after: dict) -> set[tuple[str, str]]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        with warnings.catch_warnings():  # the test client consumes an async body in one go, and says so
            warnings.filterwarnings("ignore", "StreamingHttpResponse must consume asynchronous iterators")
            return b"".join(response).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


# --- the worlds --------------------------------------------------------------------------


@pytest.fixture
def mine(acme, alice, make_provider) -> World:
    return make_world(acme, alice, make_provider)


@pytest.fixture
def theirs(globex, carol, make_provider) -> World:
    return make_world(globex, carol, make_provider)


@pytest.fixture
def markers(theirs, carol) -> set[str]:
    return markers_of(theirs, carol)


def test_both_tenants_hold_every_kind_of_data(mine, theirs):
    state = database_state(mine.tenant, theirs.tenant)
    tenant_tables = {table for scope, table in state if scope != "shared"}
    for world in (mine, theirs):
        empty = sorted(t for t in tenant_tables if not state[(world.tenant.slug, t)])
        assert not empty, f"{world.tenant.slug} has no rows in {empty}: the matrix would not notice them change"


def test_the_matrix_knows_every_api_endpoint():
    """Each keyword of each API URL names a known kind of object; each write to an object
    has a body; each endpoint without an object has its attempts."""
    mine = theirs = _Stub()
    attempts = collection_attempts(mine, theirs)
    assert {"api:provider", "api:model", "api:token", "api:usage-detail", "schema"} <= {n for _, n, _ in API}
    for route, name, pattern in API:
        for method in methods_of(pattern):
            if keywords(pattern):
                for keyword in keywords(pattern):
                    assert (section(route), keyword) in API_OBJECTS, f"{route}: teach API_OBJECTS what {keyword} names"
                if method in ("post", "put", "patch"):
                    assert (name, method) in API_WRITES, f"{method.upper()} {route}: teach API_WRITES its body"
            elif method not in READS:
                assert (name, method) in attempts, f"{method.upper()} {route}: teach collection_attempts about it"


class _Stub:
    """Anything: a World stand-in for listing the attempts' keys."""

    def __getattr__(self, name):
        return self


# --- the REST API ------------------------------------------------------------------------

OBJECT_CASES = [
    pytest.param(route, name, method, id=f"{method.upper()} {route}")
    for route, name, pattern in API
    if keywords(pattern)
    for method in methods_of(pattern)
]
COLLECTION_CASES = [
    pytest.param(route, name, method, id=f"{method.upper()} {route}")
    for route, name, pattern in API
    if not keywords(pattern)
    for method in methods_of(pattern)
]


class _Nowhere:
    """Names and ids no tenant has, in World's shape."""

    provider = standby = route = type("Named", (), {"name": "no-such-object"})
    token = admin_token = record = type("Numbered", (), {"pk": 987654321})


NOWHERE = _Nowhere()


def api_targets(route: str, name: str, world: World) -> list[str]:
    """Every URL of the endpoint aimed at one of `world`'s objects."""
    (pattern,) = [p for r, n, p in API if r == route]
    urls = [{}]
    for keyword in sorted(keywords(pattern)):
        values = API_OBJECTS[(section(route), keyword)](world)
        urls = [{**kwargs, keyword: value} for kwargs in urls for value in values]
    return [reverse(name, kwargs=kwargs) for kwargs in urls]


def send(client: ApiClient, method: str, url: str, data: Any = None):
    """`data` is the query of a GET, the JSON body of anything else."""
    if method in READS:  # ApiClient adds the token to the usual methods only
        return getattr(client, method)(url, HTTP_AUTHORIZATION=f"Bearer {client.raw_token}")
    if data is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, data)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, method", OBJECT_CASES)
@pytest.mark.parametrize("scope", [TokenScope.ADMIN, TokenScope.COMPLETIONS])
def test_acmes_token_gets_404_for_every_globex_object_and_changes_nothing(
    route, name, method, scope, mine, theirs, markers
):
    client = ApiClient(make_token(mine.tenant, scope, "matrix"))
    data = API_WRITES[(name, method)](mine, theirs) if (name, method) in API_WRITES else None
    refused = {404} if scope == TokenScope.ADMIN else {403, 404}  # the scope may refuse before the lookup
    before = database_state(mine.tenant, theirs.tenant)
    for url, nowhere in zip(api_targets(route, name, theirs), api_targets(route, name, NOWHERE), strict=False):
        response = send(client, method, url, data)
        text = body_of(response)
        if method == "options":  # describes the endpoint: the same answer as for an object that exists nowhere
            missing = send(client, method, nowhere, data)
            assert (response.status_code, text) == (missing.status_code, body_of(missing)), url
        else:
            assert response.status_code in refused, (method, url, response.status_code, text[:300])
        if method not in READS:
            assert response.json()["error"]["code"] in ("provider_not_found", "not_found", "forbidden"), url
        assert_shows_nothing_of(markers, url + json.dumps(data), text, f"{method.upper()} {url}")
        assert changed(before, database_state(mine.tenant, theirs.tenant)) == set(), f"{method.upper()} {url}"


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, method", COLLECTION_CASES)
def test_acmes_lists_never_show_globex_and_its_writes_cannot_reach_globex(
    route, name, method, mine, theirs, markers, acme_api
):
    url = "/" + route
    before = database_state(mine.tenant, theirs.tenant)
    (pattern,) = [p for r, _, p in API if r == route]
    plain = [Attempt(method, status=200 if "get" in methods_of(pattern) or method == "options" else 405)]
    for attempt in collection_attempts(mine, theirs).get((name, method)) or plain:
        response = send(acme_api, attempt.method, url, attempt.data)
        sent = url + json.dumps(attempt.data, default=str)
        text = body_of(response)
        assert response.status_code == attempt.status, (attempt, response.status_code, text[:300])
        if attempt.code:
            assert json.loads(text)["error"]["code"] == attempt.code, (attempt, text[:300])
        if attempt.empty:
            assert response.json()[attempt.empty] == [], attempt
        assert_shows_nothing_of(markers, sent, text + str(dict(response.headers)), f"{attempt}")
        assert changed(before, database_state(mine.tenant, theirs.tenant)) == set(), attempt


@pytest.mark.django_db
def test_acmes_lists_show_acmes_own_objects(mine, theirs, acme_api):
    """The matrix's lists are not empty by accident: acme sees its own world."""
    assert {p["name"] for p in acme_api.get("/api/v1/providers/").json()} == {mine.provider.name, mine.standby.name}
    assert [r["name"] for r in acme_api.get("/api/v1/models/").json()] == [mine.route.name]
    assert [r["request_id"] for r in acme_api.get("/api/v1/usage/").json()["results"]] == [mine.record.request_id]
    assert acme_api.get(f"/api/v1/usage/{mine.record.pk}/").json()["trace"]["draw"]["chosen"] == mine.provider.name
    assert mine.admin_token.prefix in {t["prefix"] for t in acme_api.get("/api/v1/tokens/").json()}
    assert acme_api.get("/api/v1/audit/").json()["results"]
    status_names = {p["name"] for p in acme_api.get("/api/v1/status/").json()["providers"]}
    assert status_names == {mine.provider.name, mine.standby.name}


def on_the_fake(upstream, *worlds: World) -> None:
    """Point the worlds' providers at the fake upstream, each at its own label."""
    for world in worlds:
        with tenant_context(world.tenant.pk):
            for config in (world.provider, world.standby):
                config.base_url = upstream.base_url(config.name, config.type)
                config.save(update_fields=["base_url"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True])
def test_api_completions_asking_for_globex_models_never_reach_globex(stream, gateway, mine, theirs, markers, upstream):
    """`model` naming globex's providers or route: globex's providers are never dialled
    and nothing of globex shows or changes (acme's own request is acme's to log)."""
    on_the_fake(upstream, mine, theirs)
    token = make_token(mine.tenant, TokenScope.COMPLETIONS, "app")
    before = database_state(mine.tenant, theirs.tenant)
    with gateway.client(token) as http:
        for model in (theirs.provider.name, theirs.standby.name, theirs.route.name):
            body = {"prompt": "hello", "model": model, "stream": stream}
            response = http.post("/api/v1/completions", json=body)
            assert response.status_code in (200, 404), (model, response.status_code, response.text[:400])
            if response.status_code == 200:
                assert response.headers["X-AxonFlow-Provider"] in (mine.provider.name, mine.standby.name)
            assert_shows_nothing_of(markers, json.dumps(body), response.text + str(response.headers), model)
    after = database_state(mine.tenant, theirs.tenant)
    assert {key for key in changed(before, after) if key[0] != mine.tenant.slug} == set()
    for config in (theirs.provider, theirs.standby):
        assert upstream.counts(config.name) == {}, f"{config.name} of globex was dialled"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True])
def test_api_completions_asking_for_a_globex_provider_or_route_is_provider_not_found(
    stream, gateway, mine, theirs, markers, upstream
):
    """SPEC §2 rule 0: a `model` that is none of the tenant's providers, routes or models
    is provider_not_found; another tenant's names are as unknown as missing ones."""
    on_the_fake(upstream, mine, theirs)
    token = make_token(mine.tenant, TokenScope.COMPLETIONS, "app")
    before = database_state(mine.tenant, theirs.tenant)
    with gateway.client(token) as http:
        for model in (theirs.provider.name, theirs.standby.name, theirs.route.name):
            body = {"prompt": "hello", "model": model, "stream": stream}
            response = http.post("/api/v1/completions", json=body)
            assert response.status_code == 404, (model, response.status_code, response.text[:400])
            assert response.json()["error"]["code"] == "provider_not_found", response.text[:300]
            assert_shows_nothing_of(markers, json.dumps(body), response.text, model)
    assert changed(before, database_state(mine.tenant, theirs.tenant)) == set()


# --- the console -------------------------------------------------------------------------

# A form post that would change an object of acme's (every field any console form reads).
CHANGE = {
    "name": "taken-over", "type": "openai", "model": "m", "weight": "1", "priority": "9", "enabled": "false",
    "role": "viewer", "state": "drained", "reason": "cross-tenant attempt", "until": "", "action": "clear",
    "target_provider": "x", "target_model": "m", "target_weight": "5",
}  # fmt: skip
HTMX = {"HTTP_HX_REQUEST": "true"}

CONSOLE_OBJECT_CASES = [pytest.param(name, pattern, id=name) for _, name, pattern in CONSOLE if keywords(pattern)]
CONSOLE_PAGE_CASES = [pytest.param(name, id=name) for _, name, pattern in CONSOLE if not keywords(pattern)]


@pytest.mark.django_db
@pytest.mark.parametrize("name, pattern", CONSOLE_OBJECT_CASES)
def test_acmes_admin_gets_404_for_every_globex_object_in_the_console(name, pattern, mine, theirs, markers, alice):
    kwargs = theirs.url_kwargs()
    unknown = keywords(pattern) - set(kwargs)
    assert not unknown, f"{name}: teach tests/console/conftest.py World.url_kwargs about {sorted(unknown)}"
    url = reverse(name, kwargs={k: kwargs[k] for k in keywords(pattern)})
    client = logged_in(alice)
    before = database_state(mine.tenant, theirs.tenant)
    for label, response in (
        ("GET", lambda: client.get(url)),
        ("GET htmx", lambda: client.get(url, **HTMX)),
        ("POST", lambda: client.post(url, CHANGE)),
        ("POST htmx", lambda: client.post(url, CHANGE, **HTMX)),
        ("HEAD", lambda: client.head(url)),
        ("PUT", lambda: client.put(url, urlencode(CHANGE), content_type="application/x-www-form-urlencoded")),
        ("PATCH", lambda: client.patch(url, urlencode(CHANGE), content_type="application/x-www-form-urlencoded")),
        ("DELETE", lambda: client.delete(url)),
    ):
        answered = response()
        assert answered.status_code == 404, (label, url, answered.status_code)
        assert_shows_nothing_of(markers, url, body_of(answered), f"{label} {url}")
        assert changed(before, database_state(mine.tenant, theirs.tenant)) == set(), f"{label} {url}"


@dataclass
class PageAttempt:
    """A request to a console page without an object in its URL. `creates` lists exactly
    the tables ("mine" or "shared", table) the request changes: a create in acme that
    names globex's tenant, and lands in acme. Nothing else changes, globex least of all."""

    method: str
    data: dict = field(default_factory=dict)
    status: tuple[int, ...] = (200,)
    creates: frozenset[tuple[str, str]] = frozenset()


def page_attempts(a: World, b: World) -> dict[str, list[PageAttempt]]:
    audit = ("mine", "tenants_auditentry")
    return {
        "console:home": [PageAttempt("get"), PageAttempt("post", {"name": b.provider.name, "weight": "1"})],
        "console:provider_add": [
            PageAttempt("get"),
            PageAttempt("get", {"type": "anthropic", "name": b.provider.name}),
            # A hidden tenant field is ignored: the provider is acme's.
            PageAttempt(
                "post",
                {
                    "name": "added",
                    "type": "openai",
                    "model": "m",
                    "base_url": "",
                    "weight": "50",
                    "priority": "0",
                    "rate_limit": "0",
                    "timeout_seconds": "30",
                    "enabled": "on",
                    "settings": "{}",
                    "tenant": b.tenant.pk,
                    "tenant_id": b.tenant.pk,
                },
                (302,),
                frozenset({("mine", "providers_providerconfig"), audit}),
            ),  # fmt: skip
        ],
        "console:provider_type_fields": [PageAttempt("get", {"type": "openai", "base_url": b.provider.base_url})],
        "console:status": [PageAttempt("get"), PageAttempt("get", {"window": "24h"})],
        "console:requests": [
            PageAttempt("get"),
            PageAttempt("get", {"provider": b.provider.name}),
            PageAttempt("get", {"token": b.token.pk}),
            PageAttempt("get", {"request_id": b.record.request_id}),
            PageAttempt("get", {"model": b.route.name}),
        ],
        "console:playground": [
            PageAttempt("get"),
            PageAttempt("post", {"prompt": "hello", "preferred_provider": b.provider.name}, (400,)),
        ],
        "console:routes": [PageAttempt("get")],
        "console:route_add": [
            PageAttempt("get"),
            PageAttempt("post", {"name": "taken", "target_provider": b.provider.name, "target_model": "m"}),
            PageAttempt("post", {"name": "taken", "target_provider": b.standby.name, "target_model": "m"}),
        ],
        "console:tokens": [
            PageAttempt("get"),
            PageAttempt(
                "post",
                {"name": "mine", "scope": "admin", "form_id": "f1", "tenant": b.tenant.pk},
                creates=frozenset({("mine", "tenants_apitoken"), audit}),
            ),  # fmt: skip
        ],
        "console:members": [
            PageAttempt("get"),
            PageAttempt(
                "post",
                {"username": "newcomer", "role": "viewer", "tenant": b.tenant.pk},
                creates=frozenset({("mine", "tenants_membership"), ("shared", "auth_user"), audit}),
            ),  # fmt: skip
        ],
        "console:budgets": [
            PageAttempt("get"),
            PageAttempt("post", {"name": "mine", "limit_usd": "1", "token_id": str(b.token.pk)}),
            PageAttempt("post", {"name": b.budget.name, "limit_usd": "1", "tenant": b.tenant.pk}, (302,),
                        frozenset({("mine", "usage_budget"), audit})),
        ],  # fmt: skip
        "console:audit": [
            PageAttempt("get"),
            PageAttempt("get", {"object_name": b.provider.name}),
            PageAttempt("get", {"object_type": "provider", "object_id": b.provider.pk}),
        ],
    }


def test_the_matrix_knows_every_console_page():
    attempts = page_attempts(_Stub(), _Stub())
    for _, name, pattern in CONSOLE:
        if not keywords(pattern):
            assert name in attempts, f"{name}: teach page_attempts what acme could try there"


@pytest.mark.django_db
@pytest.mark.parametrize("name", CONSOLE_PAGE_CASES)
def test_acmes_console_pages_never_show_or_change_globex(name, mine, theirs, markers, alice):
    client = logged_in(alice)
    url = reverse(name)
    for attempt in page_attempts(mine, theirs)[name]:
        before = database_state(mine.tenant, theirs.tenant)
        send_ = client.get if attempt.method == "get" else client.post
        response = send_(url, attempt.data)
        text = body_of(response)
        assert response.status_code in attempt.status, (attempt, response.status_code, text[:300])
        assert_shows_nothing_of(markers, json.dumps(attempt.data, default=str), text, f"{name} {attempt}")
        moved = changed(before, database_state(mine.tenant, theirs.tenant))
        expected = {(mine.tenant.slug if scope == "mine" else scope, table) for scope, table in attempt.creates}
        assert moved == expected, (attempt, sorted(moved ^ expected))


@pytest.mark.django_db
def test_a_session_naming_globex_shows_acme(mine, theirs, markers, alice):
    client = logged_in(alice)
    session = client.session
    session["active_tenant_id"] = theirs.tenant.pk  # alice is no member of globex
    session.save()
    for name in ("console:home", "console:status", "console:requests", "console:routes", "console:tokens"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        text = body_of(response)
        assert mine.provider.name in text or mine.token.prefix in text or mine.record.request_id in text, name
        assert_shows_nothing_of(markers, "", text, name)
    assert client.session["active_tenant_id"] == mine.tenant.pk


@pytest.mark.django_db
def test_acme_cannot_switch_to_globex(mine, theirs, alice):
    client = logged_in(alice)
    before = database_state(mine.tenant, theirs.tenant)
    response = client.post(reverse("tenants:switch"), {"tenant": theirs.tenant.pk, "next": "/"})
    assert response.status_code == 404
    assert client.session.get("active_tenant_id") != theirs.tenant.pk
    assert changed(before, database_state(mine.tenant, theirs.tenant)) == set()


# --- /v1, the OpenAI-compatible surface (a raw ASGI app, not in the resolver) ----------------

V1_ENDPOINTS = {
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/messages"),
}
# Paths not served: each must stay "no such endpoint" until it joins the matrix.
V1_NOT_SERVED = ("/v1/completions", "/v1/models/gpt-4o-mini")


def v1_attempts(b: World) -> list[tuple[dict, int, str]]:
    hello = [{"role": "user", "content": "hello"}]
    return [
        ({"model": b.provider.name, "messages": hello}, 404, "provider_not_found"),
        ({"model": b.standby.name, "messages": hello, "stream": True}, 404, "provider_not_found"),
        ({"model": b.route.name, "messages": hello}, 404, "provider_not_found"),
        ({"model": "auto", "messages": hello, "weights": {b.provider.name: 100}}, 400, "validation_error"),
        ({"model": "auto", "messages": hello, "preferred_provider": b.provider.name}, 400, "validation_error"),
        ({"model": "auto", "messages": hello, "stream": True, "weights": {b.standby.name: 1}}, 400, "validation_error"),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope", [TokenScope.ADMIN, TokenScope.COMPLETIONS])
def test_v1_refuses_globex_providers_and_routes_and_changes_nothing(scope, gateway, mine, theirs, markers):
    token = make_token(mine.tenant, scope, "v1")
    before = database_state(mine.tenant, theirs.tenant)
    with gateway.client(token) as http:
        for body, status_code, code in v1_attempts(theirs):
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == status_code, (body, response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == code, (body, response.text[:300])
            assert_shows_nothing_of(markers, json.dumps(body), response.text + str(response.headers), str(body))
        for body, expected in (
            ({"model": theirs.provider.name, "input": "hello"}, (404, "provider_not_found")),
            ({"model": theirs.route.name, "input": "hello"}, (404, "provider_not_found")),
            ({"model": "auto", "input": "hello", "weights": {theirs.provider.name: 100}}, (400, "validation_error")),
        ):
            response = http.post("/v1/embeddings", json=body)
            assert (response.status_code, response.json()["error"]["code"]) == expected, (body, response.text[:300])
            assert_shows_nothing_of(markers, json.dumps(body), response.text + str(response.headers), str(body))
        for name in (theirs.provider.name, theirs.standby.name, theirs.route.name):
            body = {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}
            response = http.post("/v1/messages", json=body)
            assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error", body
            assert_shows_nothing_of(markers, json.dumps(body), response.text + str(response.headers), str(body))
        listed = http.get("/v1/models")
        assert listed.status_code == 200
        ids = {m["id"] for m in listed.json()["data"]}
        assert {mine.provider.name, mine.standby.name} <= ids
        assert_shows_nothing_of(markers, "", listed.text + str(listed.headers), "GET /v1/models")
        for path in V1_NOT_SERVED:
            for method in ("GET", "POST"):
                response = http.request(method, path, json={"model": theirs.provider.name})
                assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), (
                    f"{method} {path} now answers: add it to V1_ENDPOINTS and to this matrix"
                )
    assert changed(before, database_state(mine.tenant, theirs.tenant)) == set()


# --- the live board's WebSocket ------------------------------------------------------------


async def in_thread(fn, *args):
    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def cookie_of(client) -> tuple[bytes, bytes]:
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def open_board(cookie, path: str = "/ws/status/") -> tuple[WebsocketCommunicator, list[str]]:
    """A connected board and its snapshot (every card it sends at once)."""
    from axonflow_site.asgi import application

    await db_thread.aflush()  # the fixtures' publishes go out before this board joins
    board = WebsocketCommunicator(application, path, headers=[ORIGIN, cookie])
    connected, _ = await board.connect(timeout=5)
    assert connected, path
    cards = [await board.receive_from(timeout=5)]
    while not await board.receive_nothing(timeout=0.3):
        cards.append(await board.receive_from(timeout=5))
    return board, cards


def card_ids(world: World) -> set[str]:
    return {f'id="provider-{p.pk}"' for p in (world.provider, world.standby)}


async def globex_changes(theirs: World) -> None:
    """A probe result, a configuration change, recorded traffic and a deletion, all of
    globex: each publishes to globex's boards."""
    from providers.models import ProviderConfig
    from usage.entry import Entry

    outcome = await probes.acheck(theirs.provider, status.DEFAULT_THRESHOLDS)  # port 9: refused, degraded
    assert outcome.changed
    await db_thread.aflush()  # its card is rendered before the next write (SQLite's test database locks tables)

    def edit_and_record():
        with tenant_context(theirs.tenant.pk):
            config = ProviderConfig.objects.get(pk=theirs.standby.pk)
            config.operator_state, config.operator_reason, config.operator_by = "drained", "globex secret", "carol"
            config.save()
        attempt = {"provider": theirs.provider.name, "outcome": "success", "status_code": 200, "latency_ms": 5.0,
                   "error": ""}  # fmt: skip
        usage_writer.add(
            Entry(theirs.tenant.pk, None, theirs.provider.pk, theirs.provider.name, [attempt], [theirs.provider.pk],
                  "success", 200)
        )  # fmt: skip
        usage_writer.flush()

    await in_thread(edit_and_record)
    await db_thread.aflush()


@pytest.mark.django_db(transaction=True)
async def test_acmes_board_never_receives_globex_cards(mine, theirs, markers, alice, carol, http_session):
    alice_cookie = cookie_of(await in_thread(logged_in, alice))
    carol_cookie = cookie_of(await in_thread(logged_in, carol))
    alice_board, alice_cards = await open_board(alice_cookie)
    carol_board, carol_cards = await open_board(carol_cookie)
    try:
        assert all(any(i in c for c in alice_cards) for i in card_ids(mine)), alice_cards
        for card in alice_cards:
            assert_shows_nothing_of(markers, "", card, "acme's snapshot")
        assert all(any(i in c for c in carol_cards) for i in card_ids(theirs))

        await globex_changes(theirs)

        seen_by_carol = [await carol_board.receive_from(timeout=5)]  # published: globex's own board got them
        while not await carol_board.receive_nothing(timeout=0.3):
            seen_by_carol.append(await carol_board.receive_from(timeout=5))
        assert any(f'id="provider-{theirs.provider.pk}"' in frame for frame in seen_by_carol)
        assert await alice_board.receive_nothing(timeout=1)
    finally:
        await alice_board.disconnect()
        await carol_board.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path", ["/ws/status/", "/ws/status/?tenant={globex}", "/ws/status/?window=1h&tenant_id={globex}"]
)
async def test_a_board_whose_session_names_globex_gets_acmes_cards_or_nothing(
    path, mine, theirs, markers, alice, http_session
):
    def point_at_globex():
        client = logged_in(alice)
        session = client.session
        session["active_tenant_id"] = theirs.tenant.pk  # alice is no member of globex
        session.save()
        return client

    cookie = cookie_of(await in_thread(point_at_globex))
    board, cards = await open_board(cookie, path.format(globex=theirs.tenant.pk))
    try:
        assert all(any(i in c for c in cards) for i in card_ids(mine)), cards
        for card in cards:
            assert_shows_nothing_of(markers, "", card, f"{path} snapshot")
        await globex_changes(theirs)
        assert await board.receive_nothing(timeout=1)
    finally:
        await board.disconnect()


def test_the_matrix_knows_every_v1_endpoint():
    """/v1 dispatches by path in routing/v1/app.py; every path it serves is in V1_ENDPOINTS."""
    import inspect
    import re

    from routing.v1 import app

    served = set(re.findall(r'path == "(/v1/[^"]+)"', inspect.getsource(app.openai_app)))
    assert served, "routing/v1/app.py no longer dispatches with `path == ...`: update this test's reading of it"
    assert served == {path for _, path in V1_ENDPOINTS}, f"/v1 serves {sorted(served)}: add each to the matrix"
