"""Secret references bound to tenants (SPEC §6): `{tenant}` in an allowlist entry, shared
entries, names that lie in another tenant's entry, and no existence oracle: a refused
reference looks the same whether or not the variable or file exists."""

from __future__ import annotations

import asyncio
import os

import pytest

from axonflow_site.errors import InvalidConfig
from providers import registry, secrets
from providers.adapters.base import CompletionRequest, Message, ProviderError
from providers.models import ProviderConfig
from tests.conftest import ApiClient, make_token
from tests.factories import TenantFactory

URL = "/api/v1/providers/"
BODY = {"name": "main", "type": "openai", "model": "gpt-4o-mini"}


@pytest.fixture(autouse=True)
def allowlists(settings, monkeypatch, tmp_path):
    """Env names, directories and ARNs bound to tenants, and the values they hold."""
    settings.AXONFLOW_SECRET_ENV_PREFIXES = ["AXONFLOW_{tenant}_"]
    settings.AXONFLOW_SECRET_FILE_DIRS = [str(tmp_path / "keys" / "{tenant}")]
    settings.AXONFLOW_SECRET_ARN_PREFIXES = ["arn:aws:secretsmanager:us-east-1:123456789012:secret:axonflow/{tenant}/"]
    for name, value in {
        "AXONFLOW_ACME_EU_OPENAI": "sk-acme-eu-0123456789",
        "AXONFLOW_ACME_OPENAI": "sk-acme-0123456789",
        "AXONFLOW_GLOBEX_OPENAI": "sk-globex-0123456789",
        "AXONFLOW_SHARED_OPENAI": "sk-shared-0123456789",
    }.items():
        monkeypatch.setenv(name, value)
    for slug in ("acme", "globex"):
        (tmp_path / "keys" / slug).mkdir(parents=True)
        (tmp_path / "keys" / slug / "openai").write_text(f"sk-file-{slug}-0123456789\n")
    secrets.forget_tenants()
    yield tmp_path
    secrets.forget_tenants()


@pytest.fixture
def acme_eu(db):
    return TenantFactory(slug="acme-eu", name="Acme EU", plan="enterprise")


def allowed(ref: str, tenant: str) -> bool:
    try:
        secrets.check_reference(ref, tenant)
    except InvalidConfig:
        return False
    return True


# --- {tenant} binds an entry to one tenant --------------------------------------------------


def test_an_env_entry_with_tenant_serves_only_that_tenant(acme, globex, acme_eu):
    assert allowed("env:AXONFLOW_ACME_EU_OPENAI", "acme-eu")
    assert allowed("env:AXONFLOW_GLOBEX_OPENAI", "globex")
    assert not allowed("env:AXONFLOW_GLOBEX_OPENAI", "acme-eu")
    assert not allowed("env:AXONFLOW_ACME_EU_OPENAI", "globex")
    assert not allowed("env:AXONFLOW_SHARED_OPENAI", "acme")  # no shared entry configured


def test_a_shorter_slug_cannot_reach_a_longer_tenants_names(acme, acme_eu):
    # acme's prefix AXONFLOW_ACME_ is also a prefix of acme-eu's names.
    assert allowed("env:AXONFLOW_ACME_OPENAI", "acme")
    assert not allowed("env:AXONFLOW_ACME_EU_OPENAI", "acme")
    assert allowed("env:AXONFLOW_ACME_EU_OPENAI", "acme-eu")


def test_two_slugs_with_the_same_env_spelling_share_nothing(db):
    TenantFactory(slug="acme-eu")
    TenantFactory(slug="acme_eu")
    assert not allowed("env:AXONFLOW_ACME_EU_OPENAI", "acme-eu")
    assert not allowed("env:AXONFLOW_ACME_EU_OPENAI", "acme_eu")


def test_entries_without_tenant_are_shared_but_never_reach_into_a_bound_one(acme, globex, settings):
    settings.AXONFLOW_SECRET_ENV_PREFIXES = ["AXONFLOW_{tenant}_", "AXONFLOW_"]
    assert allowed("env:AXONFLOW_SHARED_OPENAI", "acme")
    assert allowed("env:AXONFLOW_SHARED_OPENAI", "globex")
    assert not allowed("env:AXONFLOW_GLOBEX_OPENAI", "acme")  # globex's, though AXONFLOW_ matches
    assert allowed("env:AXONFLOW_GLOBEX_OPENAI", "globex")


def test_a_file_directory_with_tenant_serves_only_that_tenant(acme, globex, allowlists):
    keys = allowlists / "keys"
    assert allowed(f"file:{keys}/acme/openai", "acme")
    assert not allowed(f"file:{keys}/globex/openai", "acme")
    assert not allowed(f"file:{keys}/acme/../globex/openai", "acme")
    assert allowed(f"file:{keys}/globex/openai", "globex")


def test_an_arn_prefix_with_tenant_serves_only_that_tenant(acme, globex):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:axonflow/{}/openai-AbCdEf"
    assert allowed(arn.format("acme"), "acme")
    assert not allowed(arn.format("globex"), "acme")
    assert not allowed(arn.format("acme"), "")


def test_a_config_without_a_tenant_gets_no_bound_entry(acme):
    assert not allowed("env:AXONFLOW_ACME_OPENAI", "")


def test_a_symlink_out_of_the_tenants_directory_is_refused(acme, globex, allowlists):
    keys = allowlists / "keys"
    (keys / "acme" / "stolen").symlink_to(keys / "globex" / "openai")
    (keys / "acme" / "passwd").symlink_to("/etc/passwd")
    (keys / "acme" / "inside").symlink_to(keys / "acme" / "openai")
    assert not allowed(f"file:{keys}/acme/stolen", "acme")
    assert not allowed(f"file:{keys}/acme/passwd", "acme")
    assert allowed(f"file:{keys}/acme/inside", "acme")  # a link that stays inside is fine


def test_a_tenants_directory_that_is_a_symlink_out_is_refused(acme, globex, allowlists, settings, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "openai").write_text("sk-elsewhere-0123456789")
    (allowlists / "keys" / "acme" / "sub").symlink_to(elsewhere)
    assert not allowed(f"file:{allowlists}/keys/acme/sub/openai", "acme")


# --- no existence oracle ---------------------------------------------------------------------


def envelope(response):
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"], tuple(sorted(error["details"].items()))


def test_saving_a_refused_env_reference_says_the_same_whether_it_exists(acme, globex, acme_api, as_tenant, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://server-secret")
    monkeypatch.delenv("AXONFLOW_ACME_MISSING", raising=False)
    refs = [
        "env:DATABASE_URL",  # exists, not allowed
        "env:NO_SUCH_VARIABLE_ANYWHERE",  # missing, not allowed
        "env:AXONFLOW_GLOBEX_OPENAI",  # exists, another tenant's
        "env:AXONFLOW_GLOBEX_MISSING",  # missing, another tenant's
        "env:AXONFLOW_ACME_MISSING",  # allowed, missing
    ]
    answers = {envelope(acme_api.post(URL, {**BODY, "secret_ref": ref})) for ref in refs}
    assert len(answers) == 1, answers
    status, code, message, details = answers.pop()
    assert (status, code, details) == (400, "invalid_config", (("field", "secret_ref"),))
    assert "server-secret" not in message and "DATABASE_URL" not in message
    with as_tenant(acme):
        assert not ProviderConfig.objects.filter(tenant=acme).exists()
    r = acme_api.post(URL, {**BODY, "secret_ref": "env:AXONFLOW_ACME_OPENAI"})
    assert r.status_code == 201, r.content


def test_saving_a_refused_file_reference_says_the_same_whether_it_exists(acme, globex, acme_api, as_tenant, allowlists):
    keys = allowlists / "keys"
    (keys / "acme" / "stolen").symlink_to(keys / "globex" / "openai")
    (keys / "acme" / "empty").write_text("")
    refs = [
        "file:/etc/passwd",  # exists, outside
        "file:/etc/no-such-file-here",  # missing, outside
        f"file:{keys}/globex/openai",  # exists, another tenant's
        f"file:{keys}/acme/../globex/openai",  # .. out of the directory
        f"file:{keys}/acme/stolen",  # a symlink out of it
        f"file:{keys}/acme/missing",  # allowed, missing
        f"file:{keys}/acme/empty",  # allowed, empty
        f"file:{keys}/acme",  # allowed, a directory
    ]
    answers = {envelope(acme_api.post(URL, {**BODY, "secret_ref": ref})) for ref in refs}
    assert len(answers) == 1, answers
    assert answers.pop()[:2] == (400, "invalid_config")
    with as_tenant(acme):
        assert not ProviderConfig.objects.filter(tenant=acme).exists()


def test_another_tenant_saving_the_same_reference_is_refused(acme, globex, acme_api):
    globex_api = ApiClient(make_token(globex))
    assert acme_api.post(URL, {**BODY, "secret_ref": "env:AXONFLOW_ACME_OPENAI"}).status_code == 201
    r = globex_api.post(URL, {**BODY, "secret_ref": "env:AXONFLOW_ACME_OPENAI"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"


def complete(config: ProviderConfig) -> ProviderError:
    """The error of a completion through `config`'s adapter (the key is resolved first).

    On the loop the tenant list comes from a helper thread, whose connection cannot see
    this test's uncommitted rows: read it here first (it is then fresh for a minute)."""
    secrets._read_slugs()
    with pytest.raises(ProviderError) as caught:
        asyncio.run(registry.build(config).complete(CompletionRequest([Message("user", "hi")])))
    return caught.value


def test_when_used_a_refused_reference_fails_alike_whether_it_exists(acme, globex, make_provider, monkeypatch):
    monkeypatch.delenv("AXONFLOW_ACME_GONE", raising=False)
    refs = ["env:AXONFLOW_GLOBEX_OPENAI", "env:AXONFLOW_GLOBEX_MISSING", "env:DATABASE_URL", "env:AXONFLOW_ACME_GONE"]
    errors = [complete(make_provider(acme, name=f"p{i}", secret_ref=ref)) for i, ref in enumerate(refs)]
    assert len({(e.message, e.status_code, e.retryable) for e in errors}) == 1
    assert errors[0].retryable and errors[0].status_code is None
    assert all("globex" not in str(e) for e in errors)


def test_a_reference_saved_before_its_owner_existed_stops_resolving(acme, make_provider):
    # acme saved acme-eu's name while no tenant acme-eu existed; once it does, the name is acme-eu's.
    config = make_provider(acme, name="early", secret_ref="env:AXONFLOW_ACME_EU_OPENAI")
    assert secrets.resolve_api_key(config) == "sk-acme-eu-0123456789"
    TenantFactory(slug="acme-eu")
    secrets.invalidate(config)
    assert "secret_ref" in complete(config).message


def test_on_the_event_loop_the_tenant_list_is_read_off_the_loop_and_kept_briefly(acme, acme_eu, monkeypatch):
    reads = []
    real = secrets._read_slugs
    monkeypatch.setattr(secrets, "_read_slugs", lambda: reads.append(1) or real())
    first = secrets._request_slugs()  # sync: read now
    assert {"acme", "acme-eu"} <= first and len(reads) == 1

    async def on_loop() -> frozenset[str]:
        return secrets._request_slugs()

    assert asyncio.run(on_loop()) == first and len(reads) == 1  # fresh enough: no read
    secrets.forget_tenants()
    monkeypatch.setattr(secrets, "_read_slugs", lambda: reads.append(os.getpid()) or frozenset({"x"}))
    assert asyncio.run(on_loop()) == frozenset({"x"}) and len(reads) == 2


def test_a_tenant_list_that_cannot_be_read_refuses_bound_references(acme, monkeypatch):
    def broken():
        raise RuntimeError("database down")

    monkeypatch.setattr(secrets, "_read_slugs", broken)
    assert not allowed("env:AXONFLOW_ACME_OPENAI", "acme")
