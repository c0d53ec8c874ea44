"""`GET /metrics`: the Prometheus exposition (SPEC §3), for a bearer token.

Served as raw ASGI ahead of Django (axonflow_site/mount.py). The token is
AXONFLOW_METRICS_TOKEN; with none set the endpoint does not exist (404), so an install
never exposes its traffic figures by accident. The counters and histograms are
axonflow_site/metrics.py's (with several processes, the sum over all of them); the
provider states are read here, when scraped: from the database (health, operator state,
enabled) and the breaker (circuit), for every tenant.
"""

from __future__ import annotations

import hmac

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from axonflow_site import metrics
from axonflow_site.errors import AxonFlowError, Unauthorized
from providers.models import HealthStatus, OperatorState, ProviderConfig
from routing.health import breaker
from tenants.models import Tenant
from tenants.rls import tenant_context
from usage.spend import report

CIRCUIT_STATES = ("closed", "open", "half_open")


class ProviderStates:
    """A collector: one gauge family per state machine, one series per state (1 for the
    provider's current state, 0 for the others), as Prometheus' StateSet convention has it."""

    def collect(self):
        health = GaugeMetricFamily(
            "axonflow_provider_health", "Derived health status of each provider (1: current).",
            labels=["tenant", "provider", "status"],
        )  # fmt: skip
        circuit = GaugeMetricFamily(
            "axonflow_provider_circuit", "Circuit breaker state of each provider in this process (1: current).",
            labels=["tenant", "provider", "state"],
        )  # fmt: skip
        operator = GaugeMetricFamily(
            "axonflow_provider_operator_state", "Operator state of each provider (1: current; none: not set).",
            labels=["tenant", "provider", "state"],
        )  # fmt: skip
        enabled = GaugeMetricFamily(
            "axonflow_provider_enabled", "1 when the provider is enabled.", labels=["tenant", "provider"]
        )
        now = timezone.now()
        for slug, config in providers():
            tenant = metrics.tenant_label(slug)
            for status in HealthStatus.values:
                health.add_metric([tenant, config.name, status], float(config.health_status == status))
            state = breaker.circuit_state(config.pk)
            for each in CIRCUIT_STATES:
                circuit.add_metric([tenant, config.name, each], float(state == each))
            active = config.operator_state_at(now)
            for value in OperatorState.values:
                operator.add_metric([tenant, config.name, value or "none"], float(active == value))
            enabled.add_metric([tenant, config.name], float(config.enabled))
        yield from (health, circuit, operator, enabled)


class BudgetStates:
    """A collector: each budget's current period, from the durable ledger (usage/spend.py)."""

    def collect(self):
        ratio = GaugeMetricFamily(
            "axonflow_budget_spend_ratio", "Spend this period as a share of the budget's tighter limit (1 = reached).",
            labels=["tenant", "budget"],
        )  # fmt: skip
        spent = GaugeMetricFamily(
            "axonflow_budget_spent_usd", "Spend this period against the budget, in US dollars.",
            labels=["tenant", "budget"],
        )  # fmt: skip
        soft = GaugeMetricFamily(
            "axonflow_budget_soft_reached", "1 when the budget's spend is past its soft threshold.",
            labels=["tenant", "budget"],
        )  # fmt: skip
        for tenant in Tenant.objects.order_by("pk"):
            label = metrics.tenant_label(tenant.slug)
            for standing in report(tenant):
                name = standing.budget.name
                ratio.add_metric([label, name], (standing.percent or 0.0) / 100)
                spent.add_metric([label, name], float(standing.spent_usd))
                soft.add_metric([label, name], float(standing.soft_reached))
        yield from (ratio, spent, soft)


def providers() -> list[tuple[str, ProviderConfig]]:
    """(tenant slug, provider) for every provider, each tenant read in its RLS context."""
    found = []
    for tenant in Tenant.objects.order_by("pk"):
        with tenant_context(tenant.pk):
            found += [(tenant.slug, config) for config in ProviderConfig.objects.order_by("name")]
    return found


_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """One process: the default registry (with process and GC metrics). Several: a
    registry that reads every process's files on each scrape."""
    global _registry
    if _registry is None:
        if metrics.MULTIPROCESS:
            from prometheus_client import multiprocess

            _registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(_registry)
        else:
            _registry = REGISTRY
        _registry.register(ProviderStates())
        _registry.register(BudgetStates())
    return _registry


def exposition() -> bytes:
    metrics.take_samples()
    return generate_latest(registry())


class NotFound(AxonFlowError):
    code = "not_found"
    http_status = 404


def check_token(scope) -> None:
    """Raises NotFound (no token configured) or Unauthorized (missing or wrong)."""
    expected = settings.AXONFLOW_METRICS_TOKEN
    if not metrics.enabled or not expected:
        raise NotFound("No metrics here: set AXONFLOW_METRICS_TOKEN to enable GET /metrics.")
    given = b""
    for key, value in scope["headers"]:
        if key == b"authorization":
            given = value
    scheme, _, token = given.partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), expected.encode()):
        raise Unauthorized("GET /metrics needs the bearer token AXONFLOW_METRICS_TOKEN.")


async def metrics_app(scope, receive, send) -> None:
    import orjson

    try:
        if scope["method"] not in ("GET", "HEAD"):
            raise NotFound("Use GET for /metrics.")
        check_token(scope)
    except AxonFlowError as exc:
        body = orjson.dumps(exc.envelope())
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if exc.http_status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="axonflow-metrics"'))
        await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    body = await sync_to_async(exposition)()
    headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
