"""schemathesis over `/api/schema/` (SPEC §3; issue 10 "Must show 4").

Every operation of the schema `/api/schema/` serves is fuzzed through the whole ASGI
stack (the `gateway` fixture: uvicorn on 127.0.0.1) with an admin token of acme, over a
seeded tenant: providers on the fake upstream, a model route, tokens, usage records and
the audit entries those write, so path parameters reach real objects as well as missing
ones. Checks: no 5xx; every status, content type, header and body as the schema documents
it; input the schema calls invalid refused with a 4xx; no operation that answers 2xx
without a valid token; methods the schema does not list answered 405. Each case starts
from the same seeded state.

Budget: AXONFLOW_FUZZ_CASES cases in all (default 200, what `make test` runs; `make fuzz`
and CI run 2,000), spread evenly over the operations, plus the boundary cases schemathesis
derives from the schema; the run fails if fewer than the budget ran. AXONFLOW_FUZZ_SEED
picks another seed (default: fixed, so a failure found in CI reproduces).

Beside the fuzzing: every operation refuses a missing, unknown, revoked or expired token
(401), and a completions-scope token everywhere but the completion endpoint (403); and
every URL under /api/v1/ is in the schema, so none escapes the fuzzer.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from datetime import timedelta
from decimal import Decimal

import pytest
import schemathesis
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from tenants.models import ApiToken, Tenant, TokenScope
from tenants.rls import tenant_context
from tests.conftest import make_token
from tests.factories import ProviderConfigFactory
from usage.models import UsageRecord

BUDGET = int(os.environ.get("AXONFLOW_FUZZ_CASES", "200"))
SEED = int(os.environ.get("AXONFLOW_FUZZ_SEED", "20261001"))
METHODS = ("get", "put", "post", "patch", "delete")
PROVIDERS = ("a", "b")
BASELINE_FIELDS = (
    "type", "model", "base_url", "region", "enabled", "priority", "weight", "rate_limit", "timeout_seconds",
    "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref", "api_key_encrypted", "api_key_last4",
    "operator_state", "operator_reason", "operator_by", "operator_at", "operator_until",
)  # fmt: skip
ROUTE = "fast"

pytestmark = pytest.mark.django_db(transaction=True)


def api_schema() -> dict:
    """The schema `/api/schema/` serves, made as its view makes it: at collection time,
    before any database exists (test_the_fuzzed_schema_is_the_one_served checks they agree)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document, renderer_context={}))


def load_schema():
    """schemathesis' view of the API: the served schema, and how to fuzz it. The cases
    themselves go to the live gateway."""
    raw = api_schema()
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",  # valid input, and input the schema calls invalid
                "max-examples": max(1, math.ceil(BUDGET / len(operations_of(raw)))),
                "database": "none",  # no .hypothesis/ directory in the work tree
                "with-security-parameters": False,  # the token is ours, sent with every case
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "negative_data_rejection": {"enabled": True},
                "ignored_auth": {"enabled": True},
                "unsupported_method": {"enabled": True},
                # Valid by the schema is not always valid: names must exist, a provider
                # type may need a base URL, a route a provider; those are 400s, not bugs.
                "positive_data_acceptance": {"enabled": False},
                "missing_required_header": {"enabled": False},
                "use_after_free": {"enabled": False},
                "ensure_resource_availability": {"enabled": False},
            },
        }
    )
    return schemathesis.openapi.from_dict(raw, config=config)


def operations_of(raw: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in raw["paths"].items() for method, op in ops.items() if method in METHODS]


schema = load_schema()
OPERATIONS = operations_of(schema.raw_schema)


class Seed:
    """The tenant every case starts from; `restore()` puts back what a case changed
    (a provider a case pointed at a black hole must not stall the next one's probe)."""

    def __init__(self, tenant: Tenant, upstream) -> None:
        self.tenant = tenant
        self.upstream = upstream
        self.admin = make_token(tenant, TokenScope.ADMIN, "fuzz-admin")  # the fuzzer's own: never revoked
        self.completions = make_token(tenant, TokenScope.COMPLETIONS, "fuzz-app")
        self.protected = {str(pk) for pk in ApiToken.objects.filter(tenant=tenant).values_list("pk", flat=True)}
        self.victims = [ApiToken.issue(tenant, f"victim-{i}", TokenScope.ADMIN)[0].pk for i in range(2)]
        self.token_ids = {int(pk) for pk in self.protected} | set(self.victims)
        self.baseline: dict[str, dict] = {}
        self.record_ids: list[int] = []

    def restore(self) -> None:
        t = self.tenant
        Tenant.objects.filter(pk=t.pk).update(api_rate_limit=0)  # thousands of requests a minute, on purpose
        with tenant_context(t.pk):
            ProviderConfig.objects.filter(tenant=t).exclude(name__in=PROVIDERS).delete()
            ApiToken.objects.filter(tenant=t).exclude(pk__in=self.token_ids).delete()
            ApiToken.objects.filter(pk__in=self.victims).update(revoked_at=None)
            configs = {c.name: c for c in ProviderConfig.objects.filter(tenant=t)}
        for name in PROVIDERS:
            if name not in configs:
                configs[name] = ProviderConfigFactory(
                    tenant=t, name=name, base_url=self.upstream.base_url(name), api_key=f"sk-test-{name * 8}"
                )
                self.baseline.setdefault(name, {f: getattr(configs[name], f) for f in BASELINE_FIELDS})
            changed = {f: v for f, v in self.baseline[name].items() if getattr(configs[name], f) != v}
            if changed:  # saved, not updated: the routing caches hear of it
                for field, value in changed.items():
                    setattr(configs[name], field, value)
                with tenant_context(t.pk):
                    configs[name].save()
        with tenant_context(t.pk):
            ModelRoute.objects.filter(tenant=t).exclude(name=ROUTE).delete()
            route = ModelRoute.objects.filter(tenant=t, name=ROUTE).first()
            targets = list(route.targets.values_list("provider__name", "model", "weight")) if route else []
            if route is None or targets != [("a", "gpt-4o-mini", 50)] or route.description:
                if route is not None:
                    route.delete()
                route = ModelRoute.objects.create(tenant=t, name=ROUTE)
                ModelRouteTarget.objects.create(tenant=t, route=route, provider=configs["a"], model="gpt-4o-mini")
            if not self.record_ids:
                self.record_ids = [self.record(status) for status in ("success", "error")]

    def record(self, status: str) -> int:
        token = ApiToken.objects.get(pk=self.victims[0])
        provider = ProviderConfig.objects.get(tenant=self.tenant, name="a")
        attempt = {"provider": "a", "outcome": "success", "status_code": 200, "latency_ms": 12.5, "error": ""}
        return UsageRecord.objects.create(
            tenant=self.tenant, token=token, provider=provider, provider_name="a", status=status,
            status_code=200 if status == "success" else 502, prompt_tokens=10, completion_tokens=5, total_tokens=15,
            cost=Decimal("0.001"), latency_ms=12.5, request_id=f"req-{status}", attempts=[attempt],
        ).pk  # fmt: skip

    def path_values(self, name: str) -> list:
        """Real values for a path parameter, beside whatever the fuzzer makes up."""
        return {"name": [*PROVIDERS, ROUTE], "token_id": self.victims, "record_id": self.record_ids}.get(name, [])


CURRENT: list[Seed] = []  # the running test's, for the hooks below


@pytest.fixture
def seeded(acme, upstream, settings):
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True  # the fake upstream is on 127.0.0.1
    state = Seed(acme, upstream)
    state.restore()
    CURRENT.append(state)
    yield state
    CURRENT.remove(state)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    choices = [st.just(path_parameters)]
    for name in path_parameters or {}:
        values = CURRENT[-1].path_values(name) if CURRENT else []
        if values:
            choices.append(st.sampled_from(values).map(lambda v, n=name: {**path_parameters, n: v}))
    return st.one_of(choices)


def pick(value, choices):
    """One of `choices` chosen by `value`, the same each time (Hypothesis replays cases)."""
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


@schema.hook
def map_case(context, case):
    """Valid input that names no real provider is mostly a 400: give the valid cases the
    seeded providers' names where the schema cannot say which names exist, so routing,
    model routes and weights get past the name check into the code behind it. And no
    case revokes the fuzzer's own tokens (every later case would be a 401)."""
    path = case.operation.path
    if path == "/api/v1/tokens/{token_id}/" and CURRENT:  # never the fuzzer's own tokens
        if str((case.path_parameters or {}).get("token_id")) in CURRENT[-1].protected:
            case.path_parameters["token_id"] = CURRENT[-1].victims[0]
    body = case.body
    if case.meta is None or case.meta.generation.mode.value != "positive" or not isinstance(body, dict):
        return case
    if path == "/api/v1/completions":
        if "preferred_provider" in body:
            body["preferred_provider"] = pick(body["preferred_provider"], PROVIDERS)
        if isinstance(body.get("weights"), dict):
            body["weights"] = {pick(k, PROVIDERS): v for k, v in body["weights"].items()}
        if "prompt" in body:
            body.pop("messages", None)
        elif not any(isinstance(m, dict) and m.get("role") != "system" for m in body.get("messages") or []):
            body.pop("messages", None)
            body["prompt"] = "hello"
    elif path == "/api/v1/providers/{name}/" and "type" in body:
        body["type"] = "openai"  # the seeded providers' type, which cannot change
    elif path == "/api/v1/routing/weights/" and isinstance(body.get("weights"), dict):
        body["weights"] = {pick(k, PROVIDERS): v for k, v in body["weights"].items()}
    elif path.startswith("/api/v1/models/") and isinstance(body.get("targets"), list):
        targets = {}
        for target in body["targets"]:
            if isinstance(target, dict):
                name = pick(target.get("provider"), PROVIDERS)
                targets[name] = {**target, "provider": name}
        body["targets"] = list(targets.values()) or body["targets"]
    return case


class Ran:
    cases = 0
    operations: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _count_cases(request):
    """Reports how many cases ran; fails when every operation ran and passed, but fewer
    than BUDGET cases did (a failing operation stops at its first failure)."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and Ran.cases:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nschemathesis: {Ran.cases} cases over {len(Ran.operations)} operations")
    if len(Ran.operations) == len(OPERATIONS) and not request.session.testsfailed:
        assert Ran.cases >= BUDGET, f"only {Ran.cases} cases ran; the budget is {BUDGET}"


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_the_api_survives_fuzzing(case, seeded, gateway):
    seeded.restore()
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {seeded.admin}"})
    Ran.cases += 1
    Ran.operations.add(case.operation.label)


# --- authentication, operation by operation ---------------------------------------------------


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture
def bad_tokens(acme) -> dict[str, dict]:
    revoked, raw_revoked = ApiToken.issue(acme, "revoked", TokenScope.ADMIN)
    revoked.revoked_at = timezone.now()
    revoked.save()
    _, raw_expired = ApiToken.issue(acme, "expired", TokenScope.ADMIN, expires_at=timezone.now() - timedelta(1))
    raw_admin = make_token(acme)
    return {
        "none": {},
        "unknown": {"Authorization": "Bearer axf_" + "x" * 43},
        "tampered": {"Authorization": f"Bearer {raw_admin[:-1]}{'A' if raw_admin[-1] != 'A' else 'B'}"},
        "not bearer": {"Authorization": f"Basic {raw_admin}"},
        "no token after bearer": {"Authorization": "Bearer"},
        "revoked": {"Authorization": f"Bearer {raw_revoked}"},
        "expired": {"Authorization": f"Bearer {raw_expired}"},
    }


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS])
def test_no_operation_answers_without_a_valid_token(gateway, acme, bad_tokens, method, path, op):
    assert op.get("security"), "every operation declares its token"
    with gateway.client() as client:
        for kind, headers in bad_tokens.items():
            for verb in (method, "options"):
                response = client.request(verb, concrete(path), json={}, headers=headers)
                assert response.status_code == 401, (kind, verb, response.status_code, response.text[:200])
                assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS])
def test_a_completions_token_reaches_only_the_completion_endpoint(gateway, acme, method, path, op):
    with gateway.client(make_token(acme, TokenScope.COMPLETIONS, "app")) as client:
        response = client.request(method, concrete(path), json={})
    if op["operationId"] == "completions_create":
        assert response.status_code not in (401, 403)
    else:
        assert response.status_code == 403, response.text[:200]
        assert response.json()["error"]["code"] == "forbidden"


def api_routes(resolver=None, prefix: str = "") -> set[str]:
    """Every URL under /api/v1/ in the URL resolver, as an OpenAPI path."""
    routes = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes |= api_routes(pattern, route)
        elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
            routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return routes


def test_the_fuzzed_schema_is_the_one_served(gateway):
    with gateway.client() as client:
        response = client.get("/api/schema/", params={"format": "json"})
    assert response.status_code == 200
    assert response.json() == schema.raw_schema


def test_every_api_url_is_in_the_schema_so_none_escapes_the_fuzzer():
    assert api_routes() == set(schema.raw_schema["paths"])
