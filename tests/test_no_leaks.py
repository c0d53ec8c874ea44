"""No key, secret value or API token ever leaks (issue 10, "Must show 3"; SPEC §6).

Every provider gets its own canary key (random, in the shapes real keys have, and
shapeless ones no pattern would recognise); one key comes from an `env:` reference and
one from a `file:` reference, and the API tokens are canaries too. The fake upstream
then fails in every way that carries upstream text back: a 401 echoing the key (in the
body and a response header), a 500 whose body is the whole request, the key echoed in
an error inside a stream, a stream cut mid-way, a timeout; and on our side a key no
configured Fernet key opens and refused or missing references. Each failure goes
through every surface: /api/v1/completions (JSON and SSE), /v1/chat/completions (JSON
and stream), the playground, the health-check endpoint, the console's test connection,
then the request log and traces, the usage, status, provider and audit APIs and pages,
and the board's WebSocket frames.

Then no 8-character piece of any canary may appear in any response body or header,
page, WebSocket frame, log record (every logger at DEBUG, exception text included),
exception message, or any column of any table (every row, read with raw SQL inside each
tenant's RLS context), apart from the two columns that hold them by design:
`providers_providerconfig.api_key_encrypted` (the Fernet token) and
`tenants_apitoken.token_hash` (an HMAC).

An API token's first 7 characters are its public prefix (`axf_` and 3 characters):
stored, listed, and written into the audit log's actor on purpose, so a token can be
recognised and revoked. It is shorter than 8 characters, so every 8-character piece of
a token is a canary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets as random
import string
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from cryptography.fernet import Fernet
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from providers import registry
from providers import secrets as provider_secrets
from providers.adapters.base import CompletionRequest, Message
from providers.fake_upstream import core as fake_core
from providers.models import ProviderConfig
from routing.health import db_thread, probes, status
from tenants.models import ApiToken, Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import TEST_KEYS, ApiClient
from tests.conftest import _logged_in as logged_in
from tests.fixtures_upstream import make_config
from usage.writer import writer as usage_writer

pytestmark = pytest.mark.django_db(transaction=True)

PIECE = 8
ALNUM = string.ascii_letters + string.digits
# The columns that hold secrets by design: a Fernet token and an HMAC.
SECRET_COLUMNS = {("providers_providerconfig", "api_key_encrypted"), ("tenants_apitoken", "token_hash")}
ENV_PREFIX = "AXONFLOW_LEAKTEST_"
# Failures that carry upstream text: injected by the fake upstream for every provider.
ECHOES = ("echo_key", "echo_request", "stream_echo_key", "cut")
HELLO = [{"role": "user", "content": "hello"}]


def random_text(length: int) -> str:
    return "".join(random.choice(ALNUM) for _ in range(length))


# --- canaries and what was seen ----------------------------------------------------------


@dataclass
class Canaries:
    """Every secret of the test, by label; `pieces` maps each 8-character piece to it."""

    values: dict[str, str] = field(default_factory=dict)
    public: dict[str, int] = field(default_factory=dict)  # leading characters that are public by design

    def key(self, label: str, shape: str = "") -> str:
        value = shape + random_text(44 - len(shape))
        return self.add(label, value)

    def add(self, label: str, value: str, public: int = 0) -> str:
        self.values[label] = value
        self.public[label] = public
        return value

    def token(self, label: str, tenant: Tenant, scope: str = TokenScope.ADMIN) -> str:
        token, raw = ApiToken.issue(tenant, label, scope)
        assert raw.startswith(token.prefix)
        return self.add(label, raw, public=len(token.prefix))

    def pieces(self) -> dict[str, str]:
        found = {}
        for label, value in self.values.items():
            for start in range(len(value) - PIECE + 1):
                if start + PIECE > self.public[label]:
                    found[value[start : start + PIECE]] = label
        return found


@dataclass
class Seen:
    """Everything AxonFlow showed or stored, as (where, text)."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str | bytes | None) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if text:
            self.texts.append((where, text))

    def response(self, where: str, response) -> str:
        """A Django test-client or httpx response: its body and every header."""
        if getattr(response, "streaming", False):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "StreamingHttpResponse must consume asynchronous iterators")
                body = b"".join(response).decode("utf-8", "replace")
        elif hasattr(response, "content"):
            body = response.content.decode("utf-8", "replace")
        else:
            body = response.text
        headers = response.headers.items() if hasattr(response.headers, "items") else response.items()
        self.add(f"{where} (body)", body)
        self.add(f"{where} (headers)", "\n".join(f"{k}: {v}" for k, v in headers))
        return body

    def exception(self, where: str, exc: BaseException) -> None:
        """The exception, its message and attributes, and every exception chained to it
        (a `raise ... from None` still keeps the original as __context__)."""
        self.add(f"{where} (traceback)", "".join(traceback.format_exception(exc, chain=True)))
        seen, current = set(), exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.add(f"{where} ({type(current).__name__})", f"{current!s} {current!r} {vars(current)!r}")
            current = current.__cause__ or current.__context__


def leaks_in(canaries: Canaries, texts: Iterable[tuple[str, str]]) -> list[str]:
    pieces = canaries.pieces()
    found = []
    for where, text in texts:
        hits = {text[i : i + PIECE] for i in range(len(text) - PIECE + 1)} & pieces.keys()
        for piece in sorted(hits):
            at = text.index(piece)
            found.append(f"{pieces[piece]} in {where}: …{text[max(0, at - 60) : at + 60]!r}…")
    return found


def database_texts() -> list[tuple[str, str]]:
    """Every column of every row of every table, with raw SQL, inside each tenant's RLS
    context and outside any (PostgreSQL shows each only its rows; SQLite shows all)."""
    found = []
    tables = connection.introspection.table_names()
    with tenant_context(None):
        tenant_ids = list(Tenant.objects.values_list("pk", flat=True))
    for tenant_id in [*tenant_ids, None]:
        with tenant_context(tenant_id), connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
                columns = [c[0] for c in cursor.description]
                for row in cursor.fetchall():
                    for column, value in zip(columns, row, strict=True):
                        if (table, column) not in SECRET_COLUMNS and value is not None:
                            text = value.hex() if isinstance(value, (bytes, memoryview)) else str(value)
                            found.append((f"database {table}.{column}", text))
    # Sessions are signed base64: read them decoded too.
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_key, session_data FROM django_session")
        for key, data in cursor.fetchall():
            found.append((f"session {key[:6]}…", json.dumps(SessionStore().decode(data), default=str)))
    return found


def log_texts(caplog) -> list[tuple[str, str]]:
    """Every record any logger emitted, formatted with its exception and stack. The fake
    upstream stands in for a provider: what it logs about requests it received is the
    provider's business, not ours, so its thread is left out."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    found = []
    for record in caplog.records:
        if record.threadName == "fake-upstream":
            continue
        try:
            text = formatter.format(record)
        except Exception as exc:  # a broken record is a finding of its own
            text = f"unformattable record {record.msg!r} {record.args!r}: {exc}"
        found.append((f"log {record.name} {record.levelname}", f"{text} {record.msg!r} {record.args!r}"))
    return found


def assert_nothing_leaked(canaries: Canaries, seen: Seen, caplog) -> None:
    usage_writer.flush()
    db_thread.flush()
    everything = [*seen.texts, *log_texts(caplog), *database_texts()]
    leaks = leaks_in(canaries, everything)
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(leaks[:40])


def test_the_detector_finds_a_piece_but_not_a_public_prefix():
    canaries = Canaries()
    key = canaries.key("k", "sk-")
    canaries.add("t", "axf_ABCDEFGH" + random_text(35), public=12)
    assert leaks_in(canaries, [("x", f"…{key[17:25]}…")])
    assert not leaks_in(canaries, [("x", f"…{key[17:24]}…")])  # 7 characters are not a piece
    assert not leaks_in(canaries, [("x", "actor: ops (axf_ABCDEFGH)")])
    assert leaks_in(canaries, [("x", canaries.values["t"][5:13])])


# --- the scene: a tenant whose every provider holds a canary -----------------------------


@dataclass
class Scene:
    tenant: Tenant
    canaries: Canaries
    seen: Seen
    admin_token: str
    app_token: str
    echoing: list[ProviderConfig]  # on the fake upstream, each its own label
    broken: list[ProviderConfig]  # cannot get a key at all


def provider(tenant, name, type_, upstream, *, key="", secret_ref="", **fields) -> ProviderConfig:
    """A provider on the fake upstream (label = its name), forced healthy by an operator so
    that every request reaches it however often it just failed."""
    fields.setdefault("operator_state", "forced_healthy")
    fields.setdefault("operator_reason", "leak test: always route here")
    fields.setdefault("model", {"anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash",
                                "ollama": "llama3.2"}.get(type_, "gpt-4o-mini"))  # fmt: skip
    config = ProviderConfig(tenant=tenant, name=name, type=type_, base_url=upstream.base_url(name, type_),
                            secret_ref=secret_ref, timeout_seconds=fields.pop("timeout_seconds", 5), **fields)  # fmt: skip
    if key:
        provider_secrets.set_api_key(config, key)
    with tenant_context(tenant.pk):
        config.save()
    return config


@pytest.fixture
def scene(acme, globex, upstream, settings, monkeypatch, tmp_path) -> Scene:
    canaries, seen = Canaries(), Seen()
    settings.AXONFLOW_SECRET_ENV_PREFIXES = [ENV_PREFIX]
    settings.AXONFLOW_SECRET_FILE_DIRS = [str(tmp_path / "allowed")]
    monkeypatch.setenv(f"{ENV_PREFIX}OPENAI", canaries.key("env reference value"))
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "key").write_text(canaries.key("file reference value", "sk-"))
    monkeypatch.setenv("AXONFLOW_ELSEWHERE_KEY", canaries.key("refused env reference value"))
    (tmp_path / "elsewhere").write_text(canaries.key("refused file reference value"))

    make = lambda name, type_, **kw: provider(acme, name, type_, upstream, **kw)  # noqa: E731
    echoing = [
        make("oa", "openai", key=canaries.key("openai key", "sk-proj-")),
        make("an", "anthropic", key=canaries.key("anthropic key", "sk-ant-api03-")),
        make("gm", "gemini", key=canaries.key("gemini key", "AIza")),
        make("ol", "ollama", key=canaries.key("ollama key")),
        make("cu", "custom", key=canaries.key("custom key")),
        make(
            "cx",
            "custom",
            key=canaries.key("custom x-api-key key"),
            settings={"auth_header": "x-api-key", "auth_scheme": ""},
        ),  # fmt: skip
        make("envref", "openai", secret_ref=f"env:{ENV_PREFIX}OPENAI"),
        make("fileref", "openai", secret_ref=f"file:{tmp_path / 'allowed' / 'key'}"),
    ]
    # A key none of the configured Fernet keys opens (the keys were rotated away).
    settings.AXONFLOW_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    sealed = make("sealed", "openai", key=canaries.key("undecryptable key", "sk-"))
    settings.AXONFLOW_ENCRYPTION_KEYS = TEST_KEYS
    provider_secrets.invalidate(sealed)
    broken = [
        sealed,
        make("badenv", "openai", secret_ref="env:AXONFLOW_ELSEWHERE_KEY"),
        make("badfile", "openai", secret_ref=f"file:{tmp_path / 'elsewhere'}"),
        make("noenv", "openai", secret_ref=f"env:{ENV_PREFIX}MISSING"),
    ]
    # globex has its own secrets, which acme's failures must not carry either.
    provider(globex, "g-oa", "openai", upstream, key=canaries.key("globex openai key", "sk-"))
    canaries.token("globex token", globex)
    scene = Scene(acme, canaries, seen, canaries.token("acme admin token", acme),
                  canaries.token("acme app token", acme, TokenScope.COMPLETIONS), echoing, broken)  # fmt: skip
    return scene


def configure_all(upstream, names: Iterable[str], kind: str, **extra) -> None:
    for name in names:
        upstream.configure(name, failure_kind=kind, failure_rate=1.0, **extra)


REQUESTS_PER_SURFACE_ROUND = 8


def each_surface(scene: Scene, gateway, console, name: str, label: str, upstream) -> int:
    """One request per completion surface, aimed at provider `name` alone; returns how
    many of them reached the upstream."""
    seen = scene.seen
    before = upstream.counts(name).get("total", 0)
    api = {"prompt": "hello", "preferred_provider": name, "disable_failover": True}
    v1 = {"model": name, "messages": HELLO, "disable_failover": True}
    with gateway.client(scene.app_token) as http:
        seen.response(f"{label} /api/v1/completions", http.post("/api/v1/completions", json=api))
        seen.response(
            f"{label} /api/v1/completions SSE", http.post("/api/v1/completions", json={**api, "stream": True})
        )
        seen.response(f"{label} /v1/chat/completions", http.post("/v1/chat/completions", json=v1))
        with http.stream("POST", "/v1/chat/completions", json={**v1, "stream": True}) as streamed:
            streamed.read()
            seen.response(f"{label} /v1/chat/completions stream", streamed)
    with gateway.client(scene.admin_token) as http:
        seen.response(f"{label} health-check", http.post(f"/api/v1/providers/{name}/health-check/"))
    # Each console request waits for the health writes of the one before (circuit
    # changes, probe results): SQLite's test database locks whole tables.
    db_thread.flush()
    seen.response(f"{label} playground", console.post(reverse("console:playground"),
                                                       {"prompt": "hello", "preferred_provider": name}))  # fmt: skip
    test = reverse("console:provider_test", args=[name])
    db_thread.flush()
    seen.response(f"{label} test connection (htmx)", console.post(test, HTTP_HX_REQUEST="true"))
    db_thread.flush()
    seen.response(f"{label} test connection", console.post(test, follow=True))
    db_thread.flush()
    return upstream.counts(name).get("total", 0) - before


def every_reading_surface(scene: Scene, gateway, console) -> None:
    """What shows the failures afterwards: the request log and each trace, usage,
    status, providers and audit, as pages and as API answers."""
    usage_writer.flush()
    db_thread.flush()
    seen = scene.seen
    for page in ("console:home", "console:status", "console:requests", "console:audit", "console:tokens"):
        seen.response(page, console.get(reverse(page)))
    with gateway.client(scene.admin_token) as http:
        records = http.get("/api/v1/usage/", params={"limit": 200})
        seen.response("/api/v1/usage/", records)
        assert records.status_code == 200, records.text[:300]
        for record in records.json()["results"]:
            seen.response(f"usage {record['id']}", http.get(f"/api/v1/usage/{record['id']}/"))
            seen.response(f"request page {record['id']}", console.get(f"/requests/{record['id']}/"))
        for path in ("/api/v1/status/", "/api/v1/providers/", "/api/v1/audit/", "/api/v1/tokens/", "/v1/models"):
            seen.response(path, http.get(path))
        for config in [*scene.echoing, *scene.broken]:
            seen.response(f"provider {config.name}", http.get(f"/api/v1/providers/{config.name}/"))
            seen.response(f"edit page {config.name}", console.get(reverse("console:provider_edit", args=[config.name])))


# --- the tests ---------------------------------------------------------------------------


def test_upstream_failures_never_carry_a_key_anywhere(scene, upstream, gateway, alice, caplog):
    caplog.set_level(logging.DEBUG)
    console = logged_in(alice)
    names = [c.name for c in scene.echoing]
    for kind in ECHOES:
        configure_all(upstream, names, kind)
        for name in names:
            reached = each_surface(scene, gateway, console, name, f"{kind} {name}", upstream)
            assert reached == REQUESTS_PER_SURFACE_ROUND, (kind, name, reached)
    every_reading_surface(scene, gateway, console)
    assert_nothing_leaked(scene.canaries, scene.seen, caplog)


def test_the_fake_echoes_what_it_was_sent(scene, upstream):
    """The failures above carry the keys back: the test would see them if we passed them on."""
    import httpx

    key = scene.canaries.values["openai key"]
    for kind in ("echo_key", "echo_request"):
        upstream.configure("oa", failure_kind=kind, fail_next=1)
        answer = httpx.post(upstream.base_url("oa") + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": "m", "messages": HELLO})  # fmt: skip
        assert key in answer.text, kind
    assert answer.status_code == 500
    assert httpx.post(upstream.base_url("x") + "/chat/completions", json={}).status_code == 401


def test_a_timeout_a_sealed_key_and_bad_references_never_carry_a_secret(scene, upstream, gateway, alice, caplog):
    caplog.set_level(logging.DEBUG)
    console = logged_in(alice)
    with tenant_context(scene.tenant.pk):
        ProviderConfig.objects.filter(name="oa").update(timeout_seconds=1)
    upstream.configure("oa", failure_kind="timeout", failure_rate=1.0)
    assert each_surface(scene, gateway, console, "oa", "timeout oa", upstream) == REQUESTS_PER_SURFACE_ROUND
    for config in scene.broken:
        reached = each_surface(scene, gateway, console, config.name, f"no key {config.name}", upstream)
        assert reached == 0, f"{config.name} has no usable key but was dialled"
    every_reading_surface(scene, gateway, console)
    assert_nothing_leaked(scene.canaries, scene.seen, caplog)


def test_keys_written_through_the_api_and_console_are_never_shown_back(scene, alice, caplog, settings):
    caplog.set_level(logging.DEBUG)
    canaries, seen = scene.canaries, scene.seen
    api, console = ApiClient(scene.admin_token), logged_in(alice)
    base = {"type": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    attempts = [
        ("POST", "/api/v1/providers/", {**base, "name": "api-new", "api_key": canaries.key("api create key", "sk-")}),
        ("PATCH", "/api/v1/providers/api-new/", {"api_key": canaries.key("api patch key")}),
        ("PUT", "/api/v1/providers/api-new/", {**base, "api_key": canaries.key("api put key", "sk-")}),
        (
            "POST",
            "/api/v1/providers/",
            {**base, "name": "api-bad", "weight": 900, "api_key": canaries.key("refused create key", "sk-")},
        ),  # fmt: skip
        (
            "PATCH",
            "/api/v1/providers/api-new/",
            {"settings": {"nope": 1}, "api_key": canaries.key("refused patch key")},
        ),
        ("POST", "/api/v1/providers/", {**base, "name": "api-ref", "secret_ref": "env:AXONFLOW_ELSEWHERE_KEY"}),
        ("POST", "/api/v1/providers/", {**base, "name": "api-ref2", "secret_ref": f"env:{ENV_PREFIX}OPENAI"}),
    ]
    for method, path, body in attempts:
        response = getattr(api, method.lower())(path, body)
        seen.response(f"{method} {path}", response)
        assert response.status_code < 500, (method, path, response.status_code)
    form = {"type": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "weight": "50",
            "priority": "0", "rate_limit": "0", "timeout_seconds": "30", "enabled": "on", "settings": "{}"}  # fmt: skip
    for label, data in (
        ("console add", {**form, "name": "form-new", "api_key": canaries.key("console add key", "sk-")}),
        (
            "console add refused",
            {**form, "name": "form-bad", "weight": "900", "api_key": canaries.key("console refused key", "sk-ant-")},
        ),  # fmt: skip
        ("console add bad reference", {**form, "name": "form-ref", "secret_ref": "env:AXONFLOW_ELSEWHERE_KEY"}),
    ):
        seen.response(label, console.post(reverse("console:provider_add"), data))
        seen.response(f"{label} (htmx)", console.post(reverse("console:provider_add"), data, HTTP_HX_REQUEST="true"))
    edit = reverse("console:provider_edit", args=["form-new"])
    seen.response("console edit refused", console.post(edit, {**form, "name": "form-new", "weight": "-1",
                                                              "api_key": canaries.key("console edit key")}))  # fmt: skip
    with tenant_context(scene.tenant.pk):
        assert set(ProviderConfig.objects.filter(name__in=["api-new", "form-new"]).values_list("name", flat=True)) == {
            "api-new", "form-new"}  # fmt: skip
    for page in ("console:home", "console:audit"):
        seen.response(page, console.get(reverse(page)))
    seen.response("edit page", console.get(edit))
    for path in ("/api/v1/providers/", "/api/v1/providers/api-new/", "/api/v1/audit/"):
        seen.response(path, api.get(path))
    assert_nothing_leaked(canaries, seen, caplog)


def test_a_wrong_or_revoked_token_is_never_echoed(scene, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    canaries, seen = scene.canaries, scene.seen
    wrong = canaries.add("unknown bearer token", "axf_" + random_text(43))
    shapeless = canaries.key("unknown shapeless bearer")
    revoked = canaries.token("revoked token", scene.tenant)
    ApiToken.objects.filter(tenant=scene.tenant, name="revoked token").update(revoked_at=timezone.now())
    with gateway.client() as http:
        for token in (wrong, shapeless, revoked, scene.app_token):
            for header in (f"Bearer {token}", token, f"Basic {token}", f"Bearer {token} {token}"):
                headers = {"Authorization": header}
                seen.response("GET /api/v1/providers/", http.get("/api/v1/providers/", headers=headers))
                seen.response("POST /api/v1/completions", http.post("/api/v1/completions", headers=headers,
                                                                    json={"prompt": "hi"}))  # fmt: skip
                seen.response("POST /v1/chat/completions", http.post("/v1/chat/completions", headers=headers,
                                                                     json={"model": "auto", "messages": HELLO}))  # fmt: skip
                seen.response("GET /v1/models", http.get("/v1/models", headers=headers))
    assert_nothing_leaked(canaries, seen, caplog)


# --- exceptions, straight from the adapters ----------------------------------------------

ADAPTER_TYPES = ("openai", "anthropic", "gemini", "ollama", "custom")


async def test_adapter_exceptions_never_carry_a_key(upstream, caplog, http_session):
    """Every adapter, every echoing failure, completion, stream and probe: the raised
    ProviderError, everything chained to it, and the probe's error text."""
    caplog.set_level(logging.DEBUG)
    canaries, seen = Canaries(), Seen()
    adapters = {}
    for type_ in ADAPTER_TYPES:
        key = canaries.key(f"{type_} key", "sk-" if type_ == "openai" else "")
        config = make_config(type_, upstream.base_url(type_, type_), key, name=type_, timeout_seconds=2,
                             model="gpt-4o-mini" if type_ in ("openai", "custom") else "m")  # fmt: skip
        provider_secrets.remember(key)  # as resolving it does
        adapters[type_] = registry.build(config)
    request = CompletionRequest(messages=[Message("user", "hello")], max_tokens=20)
    for kind in (*ECHOES, "timeout", "stream_error", "malformed", "500", "401"):
        for type_, adapter in adapters.items():
            upstream.configure(type_, failure_kind=kind, failure_rate=1.0)
            for what, call in (
                ("complete", lambda a=adapter: a.complete(request)),
                ("stream", lambda a=adapter: _drain(a.stream(request))),
            ):
                try:
                    await asyncio.wait_for(call(), 10)
                except Exception as exc:  # noqa: BLE001 - every exception is what we inspect
                    seen.exception(f"{kind} {type_} {what}", exc)
            probe = await adapter.health_check()
            seen.add(f"{kind} {type_} probe", f"{probe!r}")
    assert len(seen.texts) > 50
    leaks = leaks_in(canaries, [*seen.texts, *log_texts(caplog)])
    assert not leaks, "\n".join(leaks[:40])


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def error_bodies(key: str, lengths: Iterable[int]) -> Iterable[tuple[str, str, bytes]]:
    """(type, description, body): each provider's error shape, and a plain text page,
    with the key after `length` characters of other text."""
    for length in lengths:
        text = "x" * length + f" key={key} and then more text"
        for type_ in ADAPTER_TYPES:
            module = fake_core.wire_module(type_)
            yield type_, f"{type_} error body, key at {length}", json.dumps(module.error_body(401, text)).encode()
            yield type_, f"{type_} text body, key at {length}", ("<html><body>" + text).encode()


@pytest.mark.parametrize("shape", ["sk-", ""])
def test_an_error_body_cut_short_never_keeps_part_of_a_key(shape, upstream):
    """Error text is shortened (to a line for clients, to a column's width) before it
    travels: wherever the cut falls, no piece of a key survives it."""
    canaries, seen = Canaries(), Seen()
    key = canaries.key("key", shape)
    provider_secrets.remember(key)
    calls = {t: registry.build(make_config(t, upstream.base_url("cut", t), key, name="cut", model="m"))._call()
             for t in ADAPTER_TYPES}  # fmt: skip
    for type_, label, body in error_bodies(key, range(0, 4100, 3)):
        error = calls[type_].error_for(401, body, {})
        seen.add(label, f"{error.message} {error!s}")
    leaks = leaks_in(canaries, seen.texts)
    assert not leaks, f"{len(leaks)} leak(s):\n" + "\n".join(leaks[:20])


# --- the board's WebSocket ---------------------------------------------------------------


async def in_thread(fn, *args, **kwargs):
    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


async def test_board_frames_never_carry_a_key(scene, upstream, gateway, alice, caplog, http_session):
    from channels.testing import WebsocketCommunicator

    from axonflow_site.asgi import application

    caplog.set_level(logging.DEBUG)
    client = await in_thread(logged_in, alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    await db_thread.aflush()
    board = WebsocketCommunicator(application, "/ws/status/", headers=[(b"origin", b"http://testserver"), cookie])
    connected, _ = await board.connect(timeout=5)
    assert connected
    frames: list[str] = []

    async def drain() -> None:
        while not await board.receive_nothing(timeout=0.3):
            frames.append(await board.receive_from(timeout=5))

    try:
        await drain()
        names = [c.name for c in scene.echoing]
        for kind in ("echo_key", "echo_request"):
            configure_all(upstream, names, kind)
            for config in [*scene.echoing, *scene.broken]:
                await probes.acheck(config, status.DEFAULT_THRESHOLDS)  # the board gets every probe's card
                with gateway.client(scene.app_token) as http:
                    body = {"prompt": "hello", "preferred_provider": config.name, "disable_failover": True}
                    await in_thread(http.post, "/api/v1/completions", json=body)
                await in_thread(usage_writer.flush)
                await db_thread.aflush()
                await drain()
    finally:
        await board.disconnect()
    assert len(frames) > len(scene.echoing)
    for i, frame in enumerate(frames):
        scene.seen.add(f"board frame {i}", frame)
    await in_thread(assert_nothing_leaked, scene.canaries, scene.seen, caplog)
