"""The audit log (SPEC §1 "Audit entry"): its one writer, and the filters and keyset pages
its readers share (the console's audit page and `GET /api/v1/audit/`). An entry says who
changed what, when, with the fields before and after, never a key, token or secret value.

Who: the actor of the current context. The console's middleware acts as the session
user, the REST API as the token, `manage.py` as the command (set_default_actor), so a
change is attributed the same way whichever entry point made it. What: each layer
records its own objects where they are written, on the model signals (tokens and
memberships here, providers in providers/apps.py) or in the one function that saves
them (model routes, operator states), so the console, the API, the admin and commands
are audited alike without each remembering to.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.signals import post_delete, post_save, pre_save
from django.utils.dateparse import parse_date, parse_datetime

from axonflow_site.errors import ValidationFailed
from tenants.actor import act_as, acting_as, actor_label, current_actor, set_default_actor  # noqa: F401  (the API)
from tenants.models import ActorKind, ApiToken, AuditEntry, Membership, Tenant
from tenants.rls import tenant_context


def jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[dict | None, dict | None]:
    """Only the fields that differ, on both sides; a create or delete keeps one side whole."""
    if before is None or after is None:
        return (jsonable(before) if before is not None else None), (jsonable(after) if after is not None else None)
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: jsonable(before.get(k)) for k in keys}, {k: jsonable(after[k]) for k in keys}


def record(
    tenant_id: int,
    object_type: str,
    action: str,
    *,
    object_id: Any = "",
    object_name: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditEntry | None:
    """Write one entry inside the tenant's RLS context; the current actor is the one
    acting. An update whose fields did not change writes nothing (returns None)."""
    before, after = changes(before, after)
    if action == "update" and not after:
        return None
    kind, name = current_actor()
    with tenant_context(tenant_id):
        return AuditEntry.objects.create(
            tenant_id=tenant_id,
            actor_kind=kind,
            actor=name,
            object_type=object_type,
            object_id=str(object_id or ""),
            object_name=object_name[:200],
            action=action,
            before=before,
            after=after,
        )


# --- tokens and memberships (this app's own objects) ---------------------------------------

TOKEN_FIELDS = ("name", "scope", "prefix", "expires_at", "revoked_at")  # never token_hash


def token_fields(token: ApiToken) -> dict[str, Any]:
    return {f: getattr(token, f) for f in TOKEN_FIELDS}


def membership_fields(membership: Membership) -> dict[str, Any]:
    return {"user": membership.user.get_username(), "role": membership.role}


SNAPSHOT = {ApiToken: token_fields, Membership: membership_fields}


def remember_before(sender, instance, raw=False, **kwargs) -> None:
    """pre_save: keep the stored row's fields, for the entry post_save writes."""
    if raw or instance.pk is None:
        instance._audit_before = None
        return
    stored = sender.objects.filter(pk=instance.pk).first()
    instance._audit_before = SNAPSHOT[sender](stored) if stored is not None else None


def record_token_change(sender, instance: ApiToken, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_audit_before", None)
    after = token_fields(instance)
    action = "create" if created else "update"
    if before is not None and before["revoked_at"] is None and instance.revoked_at is not None:
        action = "revoke"
    record(instance.tenant_id, "api_token", action, object_id=instance.pk, object_name=instance.name,
           before=None if created else before, after=after)  # fmt: skip


def deleting_tenant(origin: Any) -> bool:
    """Whether a post_delete is part of deleting the tenant itself (`origin`, Django's
    post_delete argument). Its log goes with it, and an entry written meanwhile would
    point at a tenant gone by the commit (an IntegrityError)."""
    return isinstance(origin, Tenant) or (isinstance(origin, QuerySet) and origin.model is Tenant)


def record_token_delete(sender, instance: ApiToken, origin=None, **kwargs) -> None:
    if deleting_tenant(origin):
        return
    record(instance.tenant_id, "api_token", "delete", object_id=instance.pk, object_name=instance.name,
           before=token_fields(instance))  # fmt: skip


def record_membership_change(sender, instance: Membership, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    before = None if created else getattr(instance, "_audit_before", None)
    record(instance.tenant_id, "membership", "create" if created else "update", object_id=instance.pk,
           object_name=instance.user.get_username(), before=before, after=membership_fields(instance))  # fmt: skip


def record_membership_delete(sender, instance: Membership, origin=None, **kwargs) -> None:
    if deleting_tenant(origin):
        return
    record(instance.tenant_id, "membership", "delete", object_id=instance.pk,
           object_name=instance.user.get_username(), before=membership_fields(instance))  # fmt: skip


def connect() -> None:
    """Called from TenantsConfig.ready()."""
    for model in SNAPSHOT:
        pre_save.connect(remember_before, sender=model, dispatch_uid=f"audit-before-{model.__name__}")
    post_save.connect(record_token_change, sender=ApiToken, dispatch_uid="audit-token-saved")
    post_delete.connect(record_token_delete, sender=ApiToken, dispatch_uid="audit-token-deleted")
    post_save.connect(record_membership_change, sender=Membership, dispatch_uid="audit-membership-saved")
    post_delete.connect(record_membership_delete, sender=Membership, dispatch_uid="audit-membership-deleted")


# --- reading the log: the filters and keyset pages the console and the API share -----------

# What the console's filter offers; the API takes any value of the same shape.
OBJECT_TYPES = ("provider", "model_route", "api_token", "membership", "budget")
ACTIONS = ("create", "update", "delete", "revoke", "drain", "force_unhealthy", "force_healthy", "clear_state")
EXACT = ("object_type", "action", "actor_kind", "object_id")  # matched exactly
CONTAINS = {"actor": "actor__icontains", "object_name": "object_name__icontains"}
PARAMS = frozenset({*EXACT, *CONTAINS, "since", "until", "limit", "cursor"})
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
MAX_TEXT = 200
WORD = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class LogQuery:
    """Cleaned query parameters: `filters` as given (for forms and links), `lookups` for
    the ORM, and the keyset position `after` = (created, id) of the last entry seen."""

    filters: dict[str, str] = field(default_factory=dict)
    lookups: dict[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    after: tuple[datetime.datetime, int] | None = None


def _fail(param: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{param}: {message}", {"field": param})


def _moment(param: str, value: str) -> datetime.datetime:
    """An ISO 8601 date or date-time in UTC; a naive one is read as UTC (the console shows UTC)."""
    moment = None
    try:
        if len(value) <= 40 and value.isascii():
            moment = parse_datetime(value)
            if moment is None and (day := parse_date(value)) is not None:
                moment = datetime.datetime(day.year, day.month, day.day)
        if moment is not None:
            moment = moment.replace(tzinfo=moment.tzinfo or datetime.UTC).astimezone(datetime.UTC)
    except (ValueError, OverflowError):  # month 13, or an offset past year 1 or 9999
        moment = None
    if moment is None:
        raise _fail(param, "must be an ISO 8601 date or date-time, such as 2030-01-31T18:00")
    return moment


def _text(param: str, value: str) -> str:
    if len(value) > MAX_TEXT or "\x00" in value:
        raise _fail(param, f"must be at most {MAX_TEXT} characters of text")
    return value


def encode_cursor(entry: AuditEntry) -> str:
    raw = f"{entry.created.isoformat()}|{entry.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime.datetime, int]:
    """(created, id) from a cursor `encode_cursor` made. Raises ValidationFailed."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode() if len(value) <= 100 else ""
        created, _, pk = raw.partition("|")
        moment = parse_datetime(created) if created.isascii() else None
        moment = moment.astimezone(datetime.UTC) if moment is not None and moment.tzinfo is not None else None
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        moment, pk = None, ""
    if moment is None or not re.fullmatch(r"[0-9]{1,18}", pk):
        raise _fail("cursor", "is not a cursor from a `next` link; start again without it")
    return moment, int(pk)


def parse_query(params: Mapping[str, str]) -> LogQuery:
    """The log query from request parameters (object_type, action, actor_kind, object_id,
    actor, object_name, since, until, limit, cursor; an empty value means "any").
    Raises ValidationFailed naming the parameter: an unknown parameter too, so a typo
    never silently widens what is shown."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise _fail(unknown[0][:40], f"unknown parameter; use {', '.join(sorted(PARAMS))}")
    given = {name: params.get(name) for name in PARAMS if params.get(name)}
    filters, lookups = {}, {}
    for name in ("object_type", "action"):
        if name in given and not WORD.fullmatch(given[name]):
            raise _fail(name, "must be a name such as " + ("provider" if name == "object_type" else "update"))
    if "actor_kind" in given and given["actor_kind"] not in ActorKind.values:
        raise _fail("actor_kind", f"must be one of {', '.join(ActorKind.values)}")
    for name in EXACT:
        if name in given:
            filters[name] = lookups[name] = _text(name, given[name])
    for name, lookup in CONTAINS.items():
        if name in given:
            filters[name] = lookups[lookup] = _text(name, given[name])
    for name, lookup in (("since", "created__gte"), ("until", "created__lt")):
        if name in given:
            filters[name], lookups[lookup] = given[name], _moment(name, given[name])
    limit = given.get("limit", str(DEFAULT_LIMIT))
    if not re.fullmatch(r"[0-9]{1,4}", limit) or not 1 <= int(limit) <= MAX_LIMIT:
        raise _fail("limit", f"must be an integer between 1 and {MAX_LIMIT}")
    after = decode_cursor(given["cursor"]) if "cursor" in given else None
    return LogQuery(filters, lookups, int(limit), after)


def entries_page(tenant_id: int, query: LogQuery) -> tuple[list[AuditEntry], str | None]:
    """The tenant's entries matching `query`, newest first, at most `query.limit` of them
    after the cursor, and the cursor of the next (older) page or None. One query, along
    the (tenant, created, id) index."""
    entries = AuditEntry.objects.filter(tenant_id=tenant_id, **query.lookups)
    if query.after is not None:
        created, pk = query.after
        # created <= c bounds the index scan; the OR breaks ties on id within one instant.
        entries = entries.filter(created__lte=created).filter(Q(created__lt=created) | Q(pk__lt=pk))
    page = list(entries.order_by("-created", "-pk")[: query.limit + 1])
    more = len(page) > query.limit
    page = page[: query.limit]
    return page, (encode_cursor(page[-1]) if more else None)
