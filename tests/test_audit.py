"""The audit log's writer and hooks (tenants/audit.py, providers/audit.py): every change
to a provider, a weight, a token or a membership leaves exactly one entry, whichever
entry point made it (the REST API, the Django admin, management commands, plain
code), with the right actor, the changed fields before and after, and no secret."""

from __future__ import annotations

import json
import sys

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

import manage
from providers import audit as provider_audit
from providers.models import OperatorState, ProviderConfig
from providers.validation import apply_provider_config
from tenants import actor, audit
from tenants.models import ActorKind, ApiToken, AuditEntry, Membership, Role, TokenScope
from tenants.rls import tenant_context
from tenants.tokens import revoke_token
from tests.conftest import ApiClient, make_token
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

KEY = "sk-live-audit-0123456789abcdefXYZ"
OTHER_KEY = "sk-live-audit-9876543210fedcbaQRS"
BODY = {"name": "main", "type": "openai", "model": "gpt-4o-mini", "api_key": KEY, "weight": 50}


def log(tenant) -> list[AuditEntry]:
    with tenant_context(tenant.pk):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


class Watch:
    """The entries a block of code writes: `with Watch(acme) as new: ...; new.entries`."""

    def __init__(self, tenant):
        self.tenant = tenant

    def __enter__(self):
        self.start = len(log(self.tenant))
        return self

    def __exit__(self, *exc):
        self.entries = log(self.tenant)[self.start :]

    @property
    def one(self) -> AuditEntry:
        assert len(self.entries) == 1, [(e.action, e.object_type, e.after) for e in self.entries]
        return self.entries[0]


def assert_no_secret(entry: AuditEntry, *secrets: str) -> None:
    text = json.dumps([entry.actor, entry.object_id, entry.object_name, entry.before, entry.after])
    for secret in secrets:
        assert secret, "a secret to look for"
        assert secret not in text and secret[len(secret) // 2 :] not in text, (secret, text)


def token_label(tenant, name: str) -> str:
    with tenant_context(tenant.pk):
        token = ApiToken.objects.get(tenant=tenant, name=name)
    return f"{token.name} ({token.prefix})"


def stored(tenant, name: str) -> ProviderConfig:
    with tenant_context(tenant.pk):
        return ProviderConfig.objects.get(tenant=tenant, name=name)


@pytest.fixture
def run_manage(monkeypatch, capsys):
    """Run a command through manage.py's main(), the way operators do, in this process:
    manage.py names the command as the actor. Returns its stdout."""
    monkeypatch.setattr(actor, "_default", actor._default)  # main() changes the process default
    monkeypatch.setattr(connections, "close_all", lambda: None)  # keep the test's transaction open

    def run(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["manage.py", *args])
        manage.main()
        return capsys.readouterr().out

    return run


# --- providers through the REST API -----------------------------------------------------------


def test_an_api_create_is_one_entry_by_the_token_with_no_key(acme_api, acme):
    with Watch(acme) as new:
        assert acme_api.post("/api/v1/providers/", BODY).status_code == 201
    entry = new.one
    config = stored(acme, "main")
    assert (entry.actor_kind, entry.actor) == (ActorKind.TOKEN, token_label(acme, "test"))
    assert (entry.object_type, entry.action, entry.object_id, entry.object_name) == (
        "provider", "create", str(config.pk), "main"
    )  # fmt: skip
    assert entry.before is None
    assert entry.after["weight"] == 50 and entry.after["model"] == "gpt-4o-mini" and entry.after["api_key"] == "set"
    assert_no_secret(entry, KEY, config.api_key_encrypted)


def test_an_api_update_records_only_the_changed_fields(acme_api, acme):
    acme_api.post("/api/v1/providers/", BODY)
    with Watch(acme) as new:
        assert acme_api.patch("/api/v1/providers/main/", {"weight": 80, "priority": 2}).status_code == 200
    entry = new.one
    assert entry.action == "update" and entry.actor_kind == ActorKind.TOKEN
    assert entry.before == {"weight": 50, "priority": 0}
    assert entry.after == {"weight": 80, "priority": 2}


def test_an_update_that_changes_nothing_writes_nothing(acme_api, acme):
    acme_api.post("/api/v1/providers/", BODY)
    with Watch(acme) as new:
        assert acme_api.patch("/api/v1/providers/main/", {"weight": 50}).status_code == 200
        assert acme_api.patch("/api/v1/providers/main/", {}).status_code == 200
        assert (
            acme_api.put("/api/v1/providers/main/", {k: v for k, v in BODY.items() if k != "api_key"}).status_code
            == 200
        )
    assert new.entries == []


def test_saving_the_same_key_again_writes_nothing(acme_api, acme):
    acme_api.post("/api/v1/providers/", BODY)
    with Watch(acme) as new:
        assert acme_api.patch("/api/v1/providers/main/", {"api_key": KEY}).status_code == 200
        assert acme_api.patch("/api/v1/providers/main/", {"api_key": KEY}).status_code == 200
    assert new.entries == []


def test_a_new_key_shows_as_replaced_and_never_itself(acme_api, acme):
    acme_api.post("/api/v1/providers/", BODY)
    old = stored(acme, "main").api_key_encrypted
    with Watch(acme) as new:
        assert acme_api.patch("/api/v1/providers/main/", {"api_key": OTHER_KEY}).status_code == 200
    entry = new.one
    assert entry.before == {"api_key": "set"} and entry.after == {"api_key": "replaced"}
    assert_no_secret(entry, KEY, OTHER_KEY, old, stored(acme, "main").api_key_encrypted)


def test_an_api_delete_is_one_entry_holding_what_was_deleted(acme_api, acme):
    acme_api.post("/api/v1/providers/", BODY)
    config = stored(acme, "main")
    with Watch(acme) as new:
        assert acme_api.delete("/api/v1/providers/main/").status_code == 204
    entry = new.one
    assert (entry.action, entry.object_id, entry.object_name) == ("delete", str(config.pk), "main")
    assert entry.after is None and entry.before["weight"] == 50 and entry.before["api_key"] == "set"
    assert_no_secret(entry, KEY, config.api_key_encrypted)


def test_a_refused_api_write_writes_nothing(acme_api, globex_api, acme, globex):
    acme_api.post("/api/v1/providers/", BODY)
    with Watch(acme) as acme_new, Watch(globex) as globex_new:
        assert acme_api.patch("/api/v1/providers/main/", {"weight": 101}).status_code == 400
        assert globex_api.patch("/api/v1/providers/main/", {"weight": 1}).status_code == 404
        assert globex_api.delete("/api/v1/providers/main/").status_code == 404
    assert acme_new.entries == [] and globex_new.entries == []


def test_a_weight_change_through_the_weights_api_is_one_entry(acme_api, acme, make_provider):
    make_provider(acme, name="a", weight=50)
    make_provider(acme, name="b", weight=50)
    with Watch(acme) as new:
        r = acme_api.put("/api/v1/routing/weights/", {"weights": {"a": 70, "b": 50}})
        assert r.status_code == 200, r.content
    entry = new.one  # b kept its weight: no entry for it
    assert (entry.object_name, entry.action, entry.before, entry.after) == (
        "a",
        "update",
        {"weight": 50},
        {"weight": 70},
    )
    assert (entry.actor_kind, entry.actor) == (ActorKind.TOKEN, token_label(acme, "test"))


def test_an_operator_state_change_is_named_by_its_action(acme, make_provider):
    config = make_provider(acme, name="a")
    with Watch(acme) as new, tenant_context(acme.pk):
        config.operator_state, config.operator_reason = OperatorState.DRAINED, "maintenance"
        config.save()
    entry = new.one
    assert entry.action == "drain"
    assert entry.after == {"operator_state": "drained", "operator_reason": "maintenance"}


# --- providers through the Django admin ----------------------------------------------------


@pytest.fixture
def root_client(acme):
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    MembershipFactory(user=root, tenant=acme, role=Role.ADMIN)
    client = Client()
    client.force_login(root)
    return client


def admin_form(acme, **extra) -> dict:
    data = {
        "tenant": acme.pk, "name": "adm", "type": "openai", "model": "gpt-4o-mini", "base_url": "", "region": "",
        "enabled": "on", "priority": 0, "weight": 50, "rate_limit": 0, "timeout_seconds": 30, "settings": "{}",
        "cost_input_per_1k": "", "cost_output_per_1k": "", "secret_ref": "", "api_key": KEY,
    }  # fmt: skip
    data.update(extra)
    return data


def test_the_django_admin_is_audited_as_its_user(root_client, acme):
    with Watch(acme) as created:
        r = root_client.post("/admin/providers/providerconfig/add/", admin_form(acme))
        assert r.status_code == 302, r.content.decode()[:2000]
    config = stored(acme, "adm")
    change = f"/admin/providers/providerconfig/{config.pk}/change/"
    with Watch(acme) as changed:
        assert root_client.post(change, admin_form(acme, weight=20, api_key="")).status_code == 302
    with Watch(acme) as resaved:  # the same values again, key field left empty
        assert root_client.post(change, admin_form(acme, weight=20, api_key="")).status_code == 302
    with Watch(acme) as deleted:
        r = root_client.post(f"/admin/providers/providerconfig/{config.pk}/delete/", {"post": "yes"})
        assert r.status_code == 302
    for entry in (created.one, changed.one, deleted.one):
        assert (entry.actor_kind, entry.actor) == (ActorKind.USER, "root")
        assert_no_secret(entry, KEY, config.api_key_encrypted)
    assert [created.one.action, changed.one.action, deleted.one.action] == ["create", "update", "delete"]
    assert (changed.one.before, changed.one.after) == ({"weight": 50}, {"weight": 20})
    assert resaved.entries == []


def test_the_admin_shows_the_log_read_only(root_client, acme, make_provider):
    make_provider(acme, name="seen")
    (entry,) = [e for e in log(acme) if e.object_type == "provider"]
    assert root_client.get("/admin/tenants/auditentry/").status_code == 200
    assert "seen" in root_client.get(f"/admin/tenants/auditentry/{entry.pk}/change/").content.decode()
    assert root_client.get("/admin/tenants/auditentry/add/").status_code == 403
    assert root_client.post(f"/admin/tenants/auditentry/{entry.pk}/change/", {"action": "x"}).status_code == 403
    assert root_client.post(f"/admin/tenants/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    r = root_client.post("/admin/tenants/auditentry/", {"action": "delete_selected", "_selected_action": [entry.pk]})
    assert r.status_code in (200, 302, 403)
    assert entry.pk in [e.pk for e in log(acme)]


def test_deleting_a_tenant_in_the_admin_takes_its_log_with_it(root_client, acme, globex, make_provider):
    make_provider(acme, name="a")
    ApiToken.issue(acme, "t")
    make_provider(globex, name="g")
    assert log(acme)
    r = root_client.post(f"/admin/tenants/tenant/{acme.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302, r.content.decode()[:3000]
    assert log(acme) == []
    assert [e.object_name for e in log(globex)] == ["g"]


# --- management commands ------------------------------------------------------------------


def test_load_demo_is_audited_as_the_command_once(run_manage, settings):
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True
    settings.DEBUG = True  # load_demo runs only in DEBUG (or with --allow-production)
    out = run_manage("load_demo", "--upstream", "http://127.0.0.1:8100")
    from tenants.models import Tenant

    demo = Tenant.objects.get(slug="demo")
    entries = log(demo)
    raw = out.split("shown once): ")[1].strip()
    assert sorted((e.object_type, e.action) for e in entries) == [
        ("api_token", "create"), ("membership", "create"),
        ("provider", "create"), ("provider", "create"), ("provider", "create"),
    ]  # fmt: skip
    with tenant_context(demo.pk):
        encrypted = list(ProviderConfig.objects.values_list("api_key_encrypted", flat=True))
        token_hash = ApiToken.objects.get(tenant=demo).token_hash
    for entry in entries:
        assert (entry.actor_kind, entry.actor) == (ActorKind.COMMAND, "load_demo")
        assert_no_secret(entry, raw, token_hash, "demo-password", *encrypted)
        assert "demo-key-for" not in json.dumps([entry.before, entry.after])
    with Watch(demo) as again:  # idempotent: a second run changes nothing, audits nothing
        run_manage("load_demo", "--upstream", "http://127.0.0.1:8100")
    assert again.entries == []


def test_a_command_that_saves_a_provider_is_audited_as_that_command(run_manage, acme, make_provider):
    config = make_provider(acme, name="a", api_key=KEY)
    old = config.api_key_encrypted
    with Watch(acme) as new:
        run_manage("shell", "-c", (
            "from providers.models import ProviderConfig; from tenants.rls import tenant_context\n"
            f"with tenant_context({acme.pk}):\n"
            "    c = ProviderConfig.objects.get(name='a'); c.weight = 5; c.save()"
        ))  # fmt: skip
    entry = new.one
    assert (entry.actor_kind, entry.actor, entry.action) == (ActorKind.COMMAND, "shell", "update")
    assert (entry.before, entry.after) == ({"weight": 50}, {"weight": 5})
    assert_no_secret(entry, KEY, old)


def test_rotating_keys_re_encrypts_without_an_entry(acme, make_provider, settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    make_provider(acme, name="a", api_key=KEY)
    settings.AXONFLOW_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.AXONFLOW_ENCRYPTION_KEYS]
    with Watch(acme) as new:
        call_command("rotate_keys", stdout=sys.stderr)
    assert stored(acme, "a").api_key_encrypted != ""
    assert new.entries == []  # the same key under a new encryption key is no change


def test_createtoken_is_one_entry_by_the_command_without_the_token(run_manage, acme):
    with Watch(acme) as new:
        raw = run_manage("createtoken", "acme", "--name", "ci", "--scope", "admin").strip()
    entry = new.one
    with tenant_context(acme.pk):
        token = ApiToken.objects.get(tenant=acme, name="ci")
    assert (entry.actor_kind, entry.actor) == (ActorKind.COMMAND, "createtoken")
    assert (entry.object_type, entry.action, entry.object_id, entry.object_name) == (
        "api_token", "create", str(token.pk), "ci"
    )  # fmt: skip
    assert entry.after["scope"] == "admin" and entry.after["prefix"] == token.prefix
    assert "token_hash" not in entry.after
    assert_no_secret(entry, raw, token.token_hash)


def test_issuing_a_token_in_code_is_one_entry_by_the_system(acme):
    with Watch(acme) as new:
        token, raw = ApiToken.issue(acme, "app", TokenScope.COMPLETIONS)
    entry = new.one
    assert (entry.actor_kind, entry.actor, entry.action) == (ActorKind.SYSTEM, "system", "create")
    assert_no_secret(entry, raw, token.token_hash)


def test_revoking_a_token_is_one_revoke_entry_and_twice_is_still_one(acme):
    token, raw = ApiToken.issue(acme, "app", TokenScope.COMPLETIONS)
    with Watch(acme) as new, audit.acting_as(ActorKind.USER, "alice"):
        assert revoke_token(token) is True
        assert revoke_token(token) is False
    entry = new.one
    assert (entry.action, entry.actor_kind, entry.actor) == ("revoke", ActorKind.USER, "alice")
    assert entry.before == {"revoked_at": None} and entry.after["revoked_at"]
    assert_no_secret(entry, raw, token.token_hash)


def test_a_token_used_by_the_api_writes_no_entry(acme, acme_api):
    with Watch(acme) as new:
        assert acme_api.get("/api/v1/providers/").status_code == 200
    assert new.entries == []  # last_used is stamped without a save signal


def test_addmember_adds_changes_and_keeps_a_role_with_one_entry_each(run_manage, acme):
    with Watch(acme) as added:
        run_manage("addmember", "acme", "erin", "--role", "viewer", "--password", "s3cret-pass-erin")
    with Watch(acme) as changed:
        run_manage("addmember", "acme", "erin", "--role", "operator")
    with Watch(acme) as unchanged:
        run_manage("addmember", "acme", "erin", "--role", "operator", "--password", "another-pass-1")
    membership = Membership.objects.get(tenant=acme, user__username="erin")
    with Watch(acme) as removed, audit.acting_as(ActorKind.USER, "alice"):
        membership.delete()
    assert (added.one.action, added.one.object_type, added.one.object_name) == ("create", "membership", "erin")
    assert added.one.after == {"user": "erin", "role": "viewer"}
    assert (changed.one.action, changed.one.before, changed.one.after) == (
        "update", {"role": "viewer"}, {"role": "operator"}
    )  # fmt: skip
    assert unchanged.entries == []  # a password change is the user's, not the tenant's configuration
    for entry in (added.one, changed.one):
        assert (entry.actor_kind, entry.actor) == (ActorKind.COMMAND, "addmember")
        assert_no_secret(entry, "s3cret-pass-erin", membership.user.password)
    assert (removed.one.action, removed.one.actor, removed.one.before) == (
        "delete", "alice", {"user": "erin", "role": "operator"}
    )  # fmt: skip


# --- the writer itself --------------------------------------------------------------------


def test_header_values_are_masked_and_a_changed_one_shows_as_replaced(acme, make_provider):
    config = make_provider(acme, name="c", type="custom", settings={"headers": {"X-Key": "hdr-secret-1111"}})
    with Watch(acme) as new, tenant_context(acme.pk):
        config.settings = {"headers": {"X-Key": "hdr-secret-2222", "X-Team": "ops-secret-3333"}}
        config.save()
    entry = new.one
    assert entry.before == {"settings": {"headers": {"X-Key": provider_audit.MASK}}}
    assert entry.after == {"settings": {"headers": {"X-Key": provider_audit.REPLACED, "X-Team": provider_audit.MASK}}}
    created = log(acme)[0]
    for e in (created, entry):
        assert_no_secret(e, "hdr-secret-1111", "hdr-secret-2222", "ops-secret-3333")


def test_a_repeated_save_with_the_same_values_writes_nothing(acme, make_provider):
    config = make_provider(acme, name="a", api_key=KEY)
    with Watch(acme) as new, tenant_context(acme.pk):
        config.save()
        ProviderConfig.objects.get(pk=config.pk).save()
        apply_provider_config(config, {"api_key": KEY}).save()  # re-encrypted, same key
        token, _raw = ApiToken.issue(acme, "t")
        token.save()
    assert [(e.object_type, e.action) for e in new.entries] == [("api_token", "create")]


def test_record_skips_an_update_without_changes_and_keeps_both_sides_of_a_change(acme):
    assert audit.record(acme.pk, "budget", "update", before={"limit": 5}, after={"limit": 5}) is None
    entry = audit.record(acme.pk, "budget", "update", object_name="monthly",
                         before={"limit": 5, "period": "month"}, after={"limit": 9, "period": "month"})  # fmt: skip
    assert (entry.before, entry.after) == ({"limit": 5}, {"limit": 9})
    when = timezone.now()
    entry = audit.record(acme.pk, "budget", "create", after={"at": when})
    assert entry.after == {"at": when.isoformat()}


def test_the_actor_is_the_innermost_context(acme):
    assert audit.current_actor() == (ActorKind.SYSTEM, "system")
    with audit.acting_as(ActorKind.USER, "alice"):
        with audit.acting_as(ActorKind.TOKEN, "ci (axf_12345678)"):
            assert audit.record(acme.pk, "budget", "create", after={"x": 1}).actor == "ci (axf_12345678)"
        assert audit.record(acme.pk, "budget", "create", after={"x": 1}).actor == "alice"
    assert audit.current_actor() == (ActorKind.SYSTEM, "system")


def test_entries_are_written_in_their_own_tenant_only(acme, globex, make_provider):
    make_provider(acme, name="a")
    make_provider(globex, name="g")
    assert [e.object_name for e in log(acme)] == ["a"]
    assert [e.object_name for e in log(globex)] == ["g"]


def test_an_api_token_is_audited_as_its_name_and_prefix(acme, globex):
    raw = make_token(acme, TokenScope.ADMIN, "deploy-bot")
    api = ApiClient(raw)
    with Watch(acme) as new:
        api.post("/api/v1/providers/", BODY)
    assert new.one.actor == token_label(acme, "deploy-bot") and raw not in new.one.actor
