"""The management commands operators script against, as the README documents them."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from providers.models import ProviderConfig
from tenants.authentication import lookup_token
from tenants.models import ApiToken, Membership, Tenant


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_createtenant_creates_and_updates(db):
    assert "Created tenant acme" in run("createtenant", "acme", "--name", "Acme Corp", "--plan", "enterprise")
    assert Tenant.objects.get(slug="acme").plan == "enterprise"
    run("createtenant", "acme", "--name", "Acme Corp", "--plan", "community")
    assert Tenant.objects.get(slug="acme").plan == "community"
    assert Tenant.objects.count() == 1


def test_createtenant_rejects_a_bad_slug(db):
    with pytest.raises(CommandError):
        run("createtenant", "Not A Slug")
    assert not Tenant.objects.exists()


def test_addmember_creates_the_user_with_a_password(db):
    run("createtenant", "acme")
    run("addmember", "acme", "erin", "--role", "operator", "--password", "s3cret-pass")
    user = get_user_model().objects.get(username="erin")
    assert user.check_password("s3cret-pass")
    assert Membership.objects.get(user=user).role == "operator"
    run("addmember", "acme", "erin", "--role", "admin")
    assert Membership.objects.get(user=user).role == "admin"


def test_addmember_needs_an_existing_tenant_and_a_password(db):
    with pytest.raises(CommandError, match="No tenant"):
        run("addmember", "nope", "erin", "--password", "long-enough")
    run("createtenant", "acme")
    with pytest.raises(CommandError):
        run("addmember", "acme", "erin")  # no terminal to prompt on
    assert not get_user_model().objects.filter(username="erin").exists()


def test_createtoken_prints_a_working_token_once(db):
    run("createtenant", "acme")
    out = run("createtoken", "acme", "--name", "ci", "--scope", "admin")
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("axf_") and len(out.strip().splitlines()) == 1
    identity = lookup_token(raw)
    assert identity.tenant_slug == "acme" and identity.scope == "admin"
    token = ApiToken.objects.get()
    assert raw not in (token.token_hash, token.prefix)


def test_load_demo_is_idempotent(db, as_tenant, settings):
    settings.DEBUG = True  # as `make run` runs it (see test_load_demo_refuses_outside_debug)
    run("load_demo", "--upstream", "http://127.0.0.1:8100")
    run("load_demo", "--upstream", "http://127.0.0.1:8100")
    tenant = Tenant.objects.get(slug="demo")
    with as_tenant(tenant):
        assert ProviderConfig.objects.filter(tenant=tenant).count() == 3
    assert get_user_model().objects.get(username="demo").check_password("demo-password")
    assert ApiToken.objects.filter(tenant=tenant).count() == 1


def test_load_demo_refuses_outside_debug_and_creates_nothing(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--allow-production"):
        run("load_demo", "--upstream", "http://127.0.0.1:8100")
    assert not Tenant.objects.exists()
    assert not get_user_model().objects.filter(username="demo").exists()
    assert not ApiToken.objects.exists()


def test_load_demo_runs_outside_debug_only_when_asked(db, settings):
    settings.DEBUG = False
    out = run("load_demo", "--upstream", "http://127.0.0.1:8100", "--allow-production")
    assert "shown once" in out
    assert get_user_model().objects.get(username="demo").is_superuser
    assert ApiToken.objects.filter(tenant__slug="demo").count() == 1


@pytest.mark.parametrize("database, redis", [(False, False), (True, False), (False, True)])
def test_serve_refuses_several_instances_without_postgresql_and_redis(settings, monkeypatch, database, redis):
    import subprocess

    settings.IS_POSTGRES = database
    settings.REDIS_URL = "redis://127.0.0.1:6379/0" if redis else ""
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: pytest.fail("started a process"))
    with pytest.raises(CommandError, match="DATABASE_URL .* and REDIS_URL"):
        call_command("serve", "--instances", "2")
