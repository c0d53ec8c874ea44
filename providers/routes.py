"""Model routes (SPEC §1 "Model route"): the one rule set and the one writer, used by
the REST API (`/api/v1/models/`), the console and anything else that edits routes.

`validate_model_route(tenant, data, instance=None)` checks a whole route body
`{name, description?, targets: [{provider, model?, weight?}]}` and returns a
`CleanedRoute`, or raises the AxonFlowError the API returns (validation_error,
duplicate_provider). It changes nothing. `save_model_route` then writes the route row
and replaces its targets in one transaction with one audit entry; `delete_model_route`
removes a route with one audit entry.

Names share one namespace with provider names, so SPEC §2 rule 0 ("a provider name →
that provider; a model route name → its targets") never has to choose between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError

from axonflow_site.errors import DuplicateProvider, ValidationFailed
from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from tenants import audit
from tenants.models import Tenant
from tenants.rls import tenant_context

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
NAME_RULE = "use 1-128 letters, digits, '.', '_', '-' or ':', starting with a letter or digit"
RESERVED_NAMES = {"auto"}  # rule 0: `auto` means every provider
FIELDS = {"name", "description", "targets"}
TARGET_FIELDS = {"provider", "model", "weight"}
MAX_TARGETS = 32
MAX_DESCRIPTION = 500
MAX_MODEL = 200
DEFAULT_WEIGHT = 50
AUDIT_TYPE = "model_route"


@dataclass(frozen=True)
class CleanedTarget:
    provider: ProviderConfig
    model: str
    weight: int


@dataclass(frozen=True)
class CleanedRoute:
    name: str
    description: str
    targets: tuple[CleanedTarget, ...]


def _fail(field: str, message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", {"field": field, **details})


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("name", "must be a string")
    value = value.strip()
    if not value:
        raise _fail("name", "is required")
    if not NAME_RE.fullmatch(value):
        raise _fail("name", NAME_RULE)
    if value.lower() in RESERVED_NAMES:
        raise _fail("name", f"'{value}' is reserved")
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail("description", "must be a string")
    value = value.strip()
    if len(value) > MAX_DESCRIPTION:
        raise _fail("description", f"must be at most {MAX_DESCRIPTION} characters")
    return value


def _weight(field: str, value: Any, index: int) -> int:
    # Console forms post strings; JSON sends integers. Booleans, floats and anything
    # else are refused rather than guessed at (as providers/validation.py does).
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "must be an integer", target=index)
    if not 0 <= value <= 100:
        raise _fail(field, "must be between 0 and 100", target=index)
    return value


def _target_shape(index: int, item: Any) -> tuple[str, Any, Any]:
    """(provider name, model, weight) of one target, shape-checked; names not resolved."""
    prefix = f"targets[{index}]"
    if not isinstance(item, dict):
        raise _fail(prefix, "must be an object with provider, model and weight", target=index)
    unknown = sorted(set(item) - TARGET_FIELDS)
    if unknown:
        raise _fail(prefix, f"unknown field(s): {', '.join(map(str, unknown))}", target=index, fields=unknown)
    provider = item.get("provider")
    if not isinstance(provider, str) or not provider.strip():
        raise _fail(f"{prefix}.provider", "is required (a provider name)", target=index)
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        raise _fail(f"{prefix}.model", "must be a string", target=index)
    model = (model or "").strip()
    if len(model) > MAX_MODEL:
        raise _fail(f"{prefix}.model", f"must be at most {MAX_MODEL} characters", target=index)
    weight = _weight(f"{prefix}.weight", item.get("weight", DEFAULT_WEIGHT), index)
    return provider.strip(), model, weight


def _targets(tenant: Tenant, value: Any) -> tuple[CleanedTarget, ...]:
    if not isinstance(value, list):
        raise _fail("targets", "must be a list of {provider, model, weight}")
    if not value:
        raise _fail("targets", "needs at least one target")
    if len(value) > MAX_TARGETS:
        raise _fail("targets", f"may have at most {MAX_TARGETS} targets")
    shaped = [_target_shape(i, item) for i, item in enumerate(value)]
    seen: dict[str, int] = {}
    for i, (provider, _model, _weight) in enumerate(shaped):
        if provider in seen:
            raise _fail(f"targets[{i}].provider", f"'{provider}' is already target {seen[provider] + 1}",
                        target=i, provider=provider)  # fmt: skip
        seen[provider] = i
    # Another tenant's provider is as unknown as a missing one.
    configs = {c.name: c for c in ProviderConfig.objects.filter(tenant=tenant, name__in=list(seen))}
    for i, (provider, _model, _weight) in enumerate(shaped):
        if provider not in configs:
            raise _fail(f"targets[{i}].provider", f"no provider named '{provider}'", target=i, provider=provider)
    return tuple(CleanedTarget(configs[p], m or configs[p].model, w) for p, m, w in shaped)


def validate_model_route(tenant: Tenant, data: Any, instance: ModelRoute | None = None) -> CleanedRoute:
    """Check a whole route body (a create, or a replacement of `instance`).

    `name` is required on create and defaults to the current one on update; an absent
    `description` is empty; `targets` is always required (the list replaces the old
    one). A target's blank model means the provider's own `model`; weight defaults to
    50. Raises ValidationFailed (details name the field, `targets[i].weight` style, and
    `target` its index) or DuplicateProvider when the name is taken by a route or a
    provider of the tenant."""
    if not isinstance(data, dict):
        raise ValidationFailed("Expected a JSON object.")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown field(s): {', '.join(map(str, unknown))}", {"fields": unknown})
    if instance is None and "name" not in data:
        raise _fail("name", "is required")
    name = _name(data["name"]) if "name" in data else instance.name
    description = _description(data.get("description"))
    if "targets" not in data:
        raise _fail("targets", "is required: at least one {provider, model, weight}")
    targets = _targets(tenant, data["targets"])
    if instance is None or name != instance.name:
        check_name_free(tenant, name, instance)
    return CleanedRoute(name, description, targets)


def check_name_free(tenant: Tenant, name: str, instance: ModelRoute | None = None) -> None:
    """Raise DuplicateProvider if a route (other than `instance`) or a provider of the
    tenant already has this name."""
    routes = ModelRoute.objects.filter(tenant=tenant, name=name)
    if instance is not None:
        routes = routes.exclude(pk=instance.pk)
    if routes.exists():
        raise DuplicateProvider(f"A model route named '{name}' already exists.", {"field": "name", "name": name})
    if ProviderConfig.objects.filter(tenant=tenant, name=name).exists():
        raise DuplicateProvider(
            f"A provider named '{name}' already exists; routes and providers share one set of names.",
            {"field": "name", "name": name},
        )


def route_fields(route: ModelRoute) -> dict[str, Any]:
    """What the audit log and the API show of a route: its targets by provider name."""
    if "targets" in getattr(route, "_prefetched_objects_cache", {}):
        targets = route.targets.all()  # callers listing many routes prefetch them with providers
    else:
        targets = route.targets.select_related("provider")
    return {
        "name": route.name,
        "description": route.description,
        "targets": [{"provider": t.provider.name, "model": t.model, "weight": t.weight} for t in targets],
    }


def _cleaned_fields(cleaned: CleanedRoute) -> dict[str, Any]:
    return {
        "name": cleaned.name,
        "description": cleaned.description,
        "targets": [{"provider": t.provider.name, "model": t.model, "weight": t.weight} for t in cleaned.targets],
    }


def save_model_route(tenant: Tenant, cleaned: CleanedRoute, instance: ModelRoute | None = None) -> ModelRoute:
    """Create a route (or replace `instance`) and its targets in one transaction, with
    one audit entry (none if nothing changed). Raises DuplicateProvider if a concurrent
    save took the name first; then nothing is written."""
    route = instance or ModelRoute(tenant=tenant)
    before = route_fields(instance) if instance is not None else None
    stored = route.name, route.description
    route.name, route.description = cleaned.name, cleaned.description
    try:
        with tenant_context(tenant.pk):
            route.save()
            ModelRouteTarget.objects.filter(route=route).delete()
            ModelRouteTarget.objects.bulk_create(
                ModelRouteTarget(
                    tenant=tenant, route=route, provider=t.provider, model=t.model, weight=t.weight, position=i
                )
                for i, t in enumerate(cleaned.targets)
            )
            audit.record(tenant.pk, AUDIT_TYPE, "create" if instance is None else "update", object_id=route.pk,
                         object_name=route.name, before=before, after=_cleaned_fields(cleaned))  # fmt: skip
    except IntegrityError:  # the unique (tenant, name) race was lost; the block rolled back
        route.name, route.description = stored
        if instance is None:
            route.pk = None
        raise DuplicateProvider(
            f"A model route named '{cleaned.name}' already exists.", {"field": "name", "name": cleaned.name}
        ) from None
    if hasattr(route, "_prefetched_objects_cache"):
        route._prefetched_objects_cache.pop("targets", None)
    return route


def delete_model_route(route: ModelRoute) -> None:
    """Delete a route and its targets, with one audit entry."""
    before = route_fields(route)
    route_id = route.pk
    with tenant_context(route.tenant_id):
        route.delete()
        audit.record(route.tenant_id, AUDIT_TYPE, "delete", object_id=route_id, object_name=route.name,
                     before=before)  # fmt: skip
