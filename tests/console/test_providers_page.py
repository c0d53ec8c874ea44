"""The console's providers page: the list (status, operator state, shares), the add and
edit forms, inline weight / priority / enabled edits, test connection, delete and the
operator controls; roles, tenant isolation, bad input by the dozen, one audit entry per
mutation with the right actor and no key."""

from __future__ import annotations

import dataclasses
import datetime
import html as htmllib
import importlib
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from console.views.providers import traffic_shares
from providers.forms import SETTINGS_KEYS
from providers.models import ProviderConfig
from tenants.models import AuditEntry

pytestmark = pytest.mark.django_db

KEY = "sk-console-secret-0123456789abcd"
HX = {"HTTP_HX_REQUEST": "true"}
LIST = "/"


def url(name: str, provider: str | None = None) -> str:
    return reverse(f"console:{name}", kwargs={"name": provider} if provider else None)


@pytest.fixture
def three(acme, make_provider):
    """a (60) and b (40) share the top priority; c is a lower-priority fallback."""
    return (
        make_provider(acme, name="a", weight=60, priority=5, api_key=KEY),
        make_provider(acme, name="b", weight=40, priority=5),
        make_provider(acme, name="c", weight=90, priority=0),
    )


def rows(tenant, as_tenant) -> list[dict]:
    with as_tenant(tenant):
        return list(ProviderConfig.objects.filter(tenant=tenant).order_by("pk").values())


def audit_entries(tenant, as_tenant) -> list[AuditEntry]:
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant).order_by("pk"))


def get(tenant, as_tenant, name: str) -> ProviderConfig:
    with as_tenant(tenant):
        return ProviderConfig.objects.get(tenant=tenant, name=name)


@pytest.fixture
def unchanged(acme, as_tenant):
    """Call after the action: asserts acme's providers and audit log are as they were."""
    before = (rows(acme, as_tenant), len(audit_entries(acme, as_tenant)))

    def check():
        assert (rows(acme, as_tenant), len(audit_entries(acme, as_tenant))) == before

    return check


@pytest.fixture
def one_entry(acme, as_tenant):
    """Call after the action: the one audit entry it wrote."""
    seen = len(audit_entries(acme, as_tenant))

    def check() -> AuditEntry:
        new = audit_entries(acme, as_tenant)[seen:]
        assert len(new) == 1, [(e.action, e.after) for e in new]
        assert KEY not in str(new[0].before) + str(new[0].after)
        return new[0]

    return check


def share_of(html: str, pk: int) -> str:
    match = re.search(rf'<span id="share-{pk}"[^>]*>.*?<span class="share-label">([^<]*)</span>', html, re.S)
    assert match, f"no share cell for {pk}"
    return match.group(1)


# --- the list ---------------------------------------------------------------------------------


def test_the_list_shows_each_provider_with_status_share_and_masked_key(alice_client, three):
    a, b, c = three
    html = alice_client.get(LIST).content.decode()
    for p in three:
        assert f'id="provider-row-{p.pk}"' in html
    assert 'class="dot dot-unknown"' in html
    assert (share_of(html, a.pk), share_of(html, b.pk), share_of(html, c.pk)) == ("60%", "40%", "failover only")
    assert "••••abcd" in html and KEY not in html
    assert 'hx-post="/providers/a/weight/"' in html and "Add provider" in html


def test_a_viewer_sees_the_same_table_read_only(bob_client, three):
    html = bob_client.get(LIST).content.decode()
    assert 'id="provider-row-' in html and share_of(html, three[0].pk) == "60%"
    assert "<input" not in html.split('id="providers-table"')[1]
    assert "hx-post" not in html and "<button" not in html.split('id="providers-table"')[1]
    assert "Add provider" not in html and "/edit/" not in html


def test_the_empty_state_links_to_the_add_form(dave_client, bob_client, acme):
    html = dave_client.get(LIST).content.decode()
    assert "No providers yet — " in html and f'href="{url("provider_add")}">add one</a>' in html
    assert "add one</a>" not in bob_client.get(LIST).content.decode()


def test_the_operator_state_shows_who_why_and_until(alice_client, acme, make_provider):
    until = timezone.now() + datetime.timedelta(hours=3)
    make_provider(acme, name="d", operator_state="drained", operator_reason="incident 7", operator_by="dave",
                  operator_at=timezone.now(), operator_until=until)  # fmt: skip
    html = alice_client.get(LIST).content.decode()
    assert 'class="pill pill-drained">Drained</span>' in html
    assert "by dave" in html and "incident 7" in html and f"until {until:%Y-%m-%d %H:%M} UTC" in html


def test_an_expired_operator_state_shows_as_none_and_takes_its_share_back(alice_client, acme, make_provider):
    d = make_provider(acme, name="d", operator_state="drained", operator_reason="old", operator_by="dave",
                      operator_until=timezone.now() - datetime.timedelta(minutes=1))  # fmt: skip
    html = alice_client.get(LIST).content.decode()
    assert "pill-drained" not in html and share_of(html, d.pk) == "100%"


def test_the_list_takes_a_bounded_number_of_queries(alice_client, acme, make_provider, django_assert_max_num_queries):
    for i in range(12):
        make_provider(acme, name=f"p{i}")
    with django_assert_max_num_queries(12):
        assert alice_client.get(LIST).status_code == 200


# --- traffic shares ----------------------------------------------------------------------------


def cfg(pk, weight=50, priority=0, enabled=True, state="") -> ProviderConfig:
    return ProviderConfig(pk=pk, name=f"p{pk}", weight=weight, priority=priority, enabled=enabled, operator_state=state)


def labels(configs) -> list[str]:
    shares = traffic_shares(configs, timezone.now())
    return [shares[c.pk][0] for c in configs]


def test_types_outside_the_plan_get_no_share():
    configs = [cfg(1, 60), cfg(2, 40)]
    configs[0].type, configs[1].type = "gemini", "openai"  # gemini needs the enterprise plan
    shares = traffic_shares(configs, timezone.now(), "community")
    assert [shares[c.pk][0] for c in configs] == ["off", "100%"]
    shares = traffic_shares(configs, timezone.now(), "enterprise")
    assert [shares[c.pk][0] for c in configs] == ["60%", "40%"]


def test_shares_split_the_top_priority_by_weight():
    assert labels([cfg(1, 60), cfg(2, 20), cfg(3, 20)]) == ["60%", "20%", "20%"]
    assert labels([cfg(1, 1), cfg(2, 2)]) == ["33%", "67%"]
    assert labels([cfg(1, 1), cfg(2, 100), cfg(3, 100)]) == ["<1%", "50%", "50%"]


def test_lower_priorities_and_zero_weights_are_failover_only():
    assert labels([cfg(1, 10, priority=2), cfg(2, 90, priority=1), cfg(3, 0, priority=2)]) == [
        "100%", "failover only", "failover only",
    ]  # fmt: skip


def test_the_top_tier_is_the_highest_with_a_positive_weight():
    assert labels([cfg(1, 0, priority=9), cfg(2, 30, priority=1)]) == ["failover only", "100%"]


def test_disabled_drained_and_forced_unhealthy_providers_are_off():
    configs = [cfg(1, 50, enabled=False), cfg(2, 50, state="drained"), cfg(3, 50, state="forced_unhealthy"),
               cfg(4, 50, state="forced_healthy")]  # fmt: skip
    assert labels(configs) == ["off", "off", "off", "100%"]


def test_no_routable_provider_leaves_every_share_off():
    assert labels([cfg(1, enabled=False)]) == ["off"]


# --- add -------------------------------------------------------------------------------------

FORM = {
    "name": "primary", "type": "openai", "model": "gpt-4o-mini", "api_key": KEY, "secret_ref": "",
    "base_url": "", "settings": "", "enabled": "on", "priority": "0", "weight": "50", "rate_limit": "0",
    "timeout_seconds": "30", "cost_input_per_1k": "", "cost_output_per_1k": "",
}  # fmt: skip


def field_error(html: str, field: str) -> str:
    """The error shown next to `field`, or ""."""
    match = re.search(rf'<div class="field has-error" id="field-{field}">(.*?)</div>', html, re.S)
    if not match:
        return ""
    error = re.search(r'<p class="field-error"[^>]*>([^<]*)</p>', match.group(1))
    return htmllib.unescape(error.group(1)) if error else ""


@pytest.mark.parametrize("client_name, actor", [("alice_client", "alice"), ("dave_client", "dave")])
def test_an_operator_adds_a_provider_after_fixing_a_validation_error(request, client_name, actor, alice, dave,
                                                                     as_tenant, acme, unchanged, one_entry):  # fmt: skip
    client = request.getfixturevalue(client_name)
    assert client.get(url("provider_add")).status_code == 200
    r = client.post(url("provider_add"), {**FORM, "weight": "101", "model": "typed-model"})
    assert r.status_code == 400
    html = r.content.decode()
    assert field_error(html, "weight") == "Must be between 0 and 100"
    assert 'value="typed-model"' in html and 'value="101"' in html and KEY not in html
    unchanged()
    r = client.post(url("provider_add"), FORM, follow=True)
    assert r.redirect_chain == [(LIST, 302)]
    assert "Provider &#x27;primary&#x27; added." in r.content.decode()
    config = get(acme, as_tenant, "primary")
    assert config.api_key_last4 == "abcd" and config.model == "gpt-4o-mini"
    entry = one_entry()
    assert (entry.action, entry.actor, entry.object_name) == ("create", actor, "primary")


def test_a_repeated_create_gives_the_duplicate_error_not_a_second_provider(dave_client, acme, as_tenant):
    assert dave_client.post(url("provider_add"), FORM).status_code == 302
    r = dave_client.post(url("provider_add"), FORM)
    assert r.status_code == 400
    assert field_error(r.content.decode(), "name") == "A provider named 'primary' already exists."
    with as_tenant(acme):
        assert ProviderConfig.objects.filter(tenant=acme).count() == 1


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"name": ""}, "name", "Use 1-64 letters"),
        ({"name": "has space"}, "name", "Use 1-64 letters"),
        ({"name": "auto"}, "name", "Use 1-64 letters"),
        ({"name": "n" * 5000}, "name", "Must be at most 64 characters"),
        ({"model": ""}, "model", "Is required"),
        ({"model": "m" * 201}, "model", "Must be at most 200 characters"),
        ({"type": "skynet"}, "type", "Must be one of"),
        ({"weight": "-1"}, "weight", "Must be between 0 and 100"),
        ({"weight": "abc"}, "weight", "Must be an integer"),
        ({"weight": ""}, "weight", "Must be an integer"),
        ({"weight": "1e3"}, "weight", "Must be an integer"),
        ({"priority": "1001"}, "priority", "Must be between -1000 and 1000"),
        ({"rate_limit": "-5"}, "rate_limit", "Must be between 0 and 1000000"),
        ({"timeout_seconds": "0"}, "timeout_seconds", "Must be between 1 and 600"),
        ({"cost_input_per_1k": "-1"}, "cost_input_per_1k", "Must be between 0 and 1000000"),
        ({"cost_output_per_1k": "NaN"}, "cost_output_per_1k", "Must be between 0 and 1000000"),
        ({"cost_output_per_1k": "lots"}, "cost_output_per_1k", "Must be a number"),
        ({"base_url": "ftp://x"}, "base_url", "Must be an http:// or https:// URL"),
        ({"base_url": "http://user:pw@x"}, "base_url", "Must not contain credentials"),
        ({"type": "ollama"}, "base_url", "Is required for ollama providers"),
        ({"type": "custom"}, "base_url", "Is required for custom providers"),
        ({"type": "bedrock", "region": ""}, "region", "Is required for bedrock providers"),
        ({"type": "bedrock", "region": "mars-1"}, "region", "Must be an AWS region"),
        ({"settings": "{not json"}, "settings", "Must be valid JSON"),
        ({"settings": "[1, 2]"}, "settings", "Must be an object"),
        ({"settings": "[" * 5000 + "]" * 5000}, "settings", "Must be valid JSON"),
        ({"settings": '{"a": "' + "x" * 20_001 + '"}'}, "settings", "Must be at most 20000 characters"),
        ({"secret_ref": "vault:x", "api_key": ""}, "secret_ref", "Secret_ref must start with env:"),
        ({"secret_ref": "env:HOME"}, "api_key", "Give an API key or a secret reference, not both"),
    ],
)
def test_bad_input_shows_the_error_next_to_its_field_and_adds_nothing(dave_client, unchanged, change, field, message):
    r = dave_client.post(url("provider_add"), {**FORM, **change})
    assert r.status_code == 400
    html = r.content.decode()
    assert field_error(html, field).startswith(message), (field_error(html, field), html[-3000:])
    assert KEY not in html
    unchanged()


def test_a_community_tenant_cannot_add_an_enterprise_type(carol_client, globex, as_tenant):
    r = carol_client.post(url("provider_add"), {**FORM, "type": "bedrock", "region": "us-east-1"})
    assert r.status_code == 400 and "enterprise" in field_error(r.content.decode(), "type").lower()
    assert rows(globex, as_tenant) == []


def test_an_htmx_form_post_gets_its_errors_with_200_and_a_client_redirect_on_success(dave_client, acme, as_tenant):
    r = dave_client.post(url("provider_add"), {**FORM, "weight": "-1"}, **HX)
    assert r.status_code == 200 and field_error(r.content.decode(), "weight")
    r = dave_client.post(url("provider_add"), FORM, **HX)
    assert r.status_code == 200 and r.headers["HX-Redirect"] == LIST


# --- the type-specific fields ---------------------------------------------------------------------


def test_the_type_fields_follow_the_chosen_type(dave_client):
    bedrock = dave_client.get(url("provider_type_fields"), {"type": "bedrock", "base_url": "http://kept"}).content
    bedrock = bedrock.decode()
    assert "<html" not in bedrock and 'id="type-fields"' in bedrock
    assert 'name="region"' in bedrock and "aws_access_key_id" in bedrock and 'value="http://kept"' in bedrock
    ollama = dave_client.get(url("provider_type_fields"), {"type": "ollama"}).content.decode()
    assert 'name="region"' not in ollama and "Required for ollama." in ollama and "keep_alive" in ollama
    openai = dave_client.get(url("provider_type_fields"), {"type": "openai"}).content.decode()
    assert "Optional" in openai and "max_tokens_field" in openai
    assert "auth_scheme" in dave_client.get(url("provider_type_fields"), {"type": "custom"}).content.decode()


def test_an_unknown_type_falls_back_to_the_default_fields(dave_client):
    r = dave_client.get(url("provider_type_fields"), {"type": "<script>" * 100})
    assert r.status_code == 200 and "<script>" not in r.content.decode()


def test_the_add_form_swaps_the_type_fields_with_htmx(dave_client):
    html = dave_client.get(url("provider_add")).content.decode()
    assert f'hx-get="{url("provider_type_fields")}"' in html and 'hx-target="#type-fields"' in html
    assert 'hx-include="#id_base_url, #id_region, #id_settings"' in html  # never the key


@pytest.mark.parametrize("provider_type", list(SETTINGS_KEYS))
def test_the_settings_help_lists_every_key_the_adapter_reads(provider_type):
    module = importlib.import_module(f"providers.adapters.{provider_type}")
    read = {f.name for f in dataclasses.fields(module.Settings)}
    listed = {key for key, _ in SETTINGS_KEYS[provider_type]}
    assert read <= listed and listed - read <= {"factory"}


# --- edit -------------------------------------------------------------------------------------


STORED = {"base_url": "http://127.0.0.1:9"}  # what make_provider stores


def test_the_edit_form_shows_the_key_hint_never_the_key_and_fixes_the_type(dave_client, three):
    html = dave_client.get(url("provider_edit", "a")).content.decode()
    assert "Stored: ••••abcd" in html and KEY not in html
    assert re.search(r'<select name="type"[^>]*disabled', html)
    assert 'value="a"' in html and 'value="60"' in html


def test_an_empty_key_on_edit_keeps_the_stored_key(dave_client, three, acme, as_tenant, one_entry):
    before = get(acme, as_tenant, "a").api_key_encrypted
    data = {**FORM, **STORED, "name": "a", "api_key": "", "weight": "70", "priority": "5", "type": "anthropic"}
    r = dave_client.post(url("provider_edit", "a"), data)
    assert r.status_code == 302, r.content.decode()[-2000:]
    config = get(acme, as_tenant, "a")
    assert config.api_key_encrypted == before and config.weight == 70 and config.type == "openai"
    entry = one_entry()
    assert (entry.action, entry.actor, entry.after) == ("update", "dave", {"weight": 70})


def test_a_new_key_replaces_the_stored_one_and_the_audit_says_replaced(dave_client, three, acme, as_tenant, one_entry):
    data = {**FORM, **STORED, "name": "a", "api_key": "sk-another-key-9999", "priority": "5", "weight": "60"}
    assert dave_client.post(url("provider_edit", "a"), data).status_code == 302
    assert get(acme, as_tenant, "a").api_key_last4 == "9999"
    entry = one_entry()
    assert entry.after == {"api_key": "replaced"} and "sk-another" not in str(entry.after)


def test_renaming_onto_another_provider_is_refused(dave_client, three, unchanged):
    r = dave_client.post(url("provider_edit", "a"), {**FORM, "name": "b", "api_key": ""})
    assert r.status_code == 400 and field_error(r.content.decode(), "name") == "A provider named 'b' already exists."
    unchanged()


def test_custom_header_values_are_masked_on_the_page_and_kept_on_save(dave_client, acme, make_provider, as_tenant):
    make_provider(acme, name="gw", type="custom", base_url="http://127.0.0.1:9/v1",
                  settings={"headers": {"X-Secret": "hdr-secret-value"}})  # fmt: skip
    html = dave_client.get(url("provider_edit", "gw")).content.decode()
    assert "hdr-secret-value" not in html and "X-Secret" in html
    settings = '{"headers": {"X-Secret": "••••", "X-New": "plain"}}'
    data = {**FORM, "name": "gw", "type": "custom", "base_url": "http://127.0.0.1:9/v1", "api_key": "",
            "settings": settings}  # fmt: skip
    assert dave_client.post(url("provider_edit", "gw"), data).status_code == 302
    assert get(acme, as_tenant, "gw").settings == {"headers": {"X-Secret": "hdr-secret-value", "X-New": "plain"}}


# --- inline weight, priority, enabled -------------------------------------------------------------


def test_an_inline_weight_change_returns_the_row_with_its_new_share_and_the_others_out_of_band(
    dave_client, three, acme, as_tenant, one_entry
):
    a, b, c = three
    r = dave_client.post(url("provider_weight", "a"), {"weight": "10"}, **HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith(f'<tr id="provider-row-{a.pk}"') and "<html" not in html
    assert share_of(html, a.pk) == "20%"
    assert re.search(rf'<span id="share-{b.pk}"[^>]*hx-swap-oob="true"', html) and share_of(html, b.pk) == "80%"
    assert share_of(html, c.pk) == "failover only"
    assert html.count('hx-swap-oob="true"') == 2
    assert get(acme, as_tenant, "a").weight == 10
    entry = one_entry()
    assert (entry.action, entry.actor, entry.before, entry.after) == ("update", "dave", {"weight": 60}, {"weight": 10})


@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "Must be between 0 and 100"),
        ("101", "Must be between 0 and 100"),
        ("abc", "Must be an integer"),
        ("", "Must be an integer"),
        ("1.5", "Must be an integer"),
        ("9" * 10_000, "Must be an integer"),
        ("0x10", "Must be an integer"),
        ("NaN", "Must be an integer"),
        ("1e2", "Must be an integer"),
        ("50; drop table", "Must be an integer"),
        ("+-5", "Must be an integer"),
    ],  # fmt: skip
)
def test_a_bad_inline_weight_shows_the_error_next_to_the_field_with_200(dave_client, three, unchanged, value, message):
    r = dave_client.post(url("provider_weight", "a"), {"weight": value}, **HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert re.search(r'<div class="field inline has-error">\s*<label[^>]*>Weight of a</label>\s*<input[^>]*'
                     r'aria-invalid="true"', html)  # fmt: skip
    assert f'<p class="field-error" id="weight-error-{three[0].pk}" role="alert">{message}</p>' in html
    unchanged()


def test_a_bad_weight_without_htmx_is_a_400_page(dave_client, three, unchanged):
    r = dave_client.post(url("provider_weight", "a"), {"weight": "101"})
    assert r.status_code == 400 and "Must be between 0 and 100" in r.content.decode() and "<html" in r.content.decode()
    unchanged()


def test_a_weight_change_without_htmx_redirects_to_the_list(dave_client, three, acme, as_tenant):
    assert dave_client.post(url("provider_weight", "a"), {"weight": "5"}).status_code == 302
    assert get(acme, as_tenant, "a").weight == 5


def test_an_inline_priority_change_moves_the_top_tier(dave_client, three, acme, as_tenant, one_entry):
    a, b, c = three
    html = dave_client.post(url("provider_priority", "c"), {"priority": "9"}, **HX).content.decode()
    assert (share_of(html, c.pk), share_of(html, a.pk), share_of(html, b.pk)) == ("100%", "failover only",
                                                                                 "failover only")  # fmt: skip
    assert get(acme, as_tenant, "c").priority == 9
    assert one_entry().after == {"priority": 9}


@pytest.mark.parametrize("value", ["-1001", "1001", "high", "", "2.5"])
def test_a_bad_priority_changes_nothing(dave_client, three, unchanged, value):
    r = dave_client.post(url("provider_priority", "a"), {"priority": value}, **HX)
    assert r.status_code == 200 and 'id="priority-error-' in r.content.decode()
    unchanged()


def test_the_enabled_toggle_turns_a_provider_off_and_on(dave_client, three, acme, as_tenant, one_entry):
    a, b, _c = three
    html = dave_client.post(url("provider_enabled", "a"), {"enabled": "false"}, **HX).content.decode()
    assert 'aria-checked="false"' in html and share_of(html, a.pk) == "off" and share_of(html, b.pk) == "100%"
    assert '{"enabled": "true"}' in html  # the next click turns it back on
    assert get(acme, as_tenant, "a").enabled is False
    assert one_entry().after == {"enabled": False}
    dave_client.post(url("provider_enabled", "a"), {"enabled": "false"}, **HX)  # repeated: nothing new
    assert dave_client.post(url("provider_enabled", "a"), {"enabled": "true"}, **HX).status_code == 200
    assert get(acme, as_tenant, "a").enabled is True


@pytest.mark.parametrize("data", [{}, {"enabled": ""}, {"enabled": "yes"}, {"enabled": "on"}, {"enabled": "1"}])
def test_a_bad_enabled_value_changes_nothing(dave_client, three, unchanged, data):
    r = dave_client.post(url("provider_enabled", "a"), data, **HX)
    assert r.status_code == 200 and "Must be true or false" in r.content.decode()
    unchanged()


# --- test connection ------------------------------------------------------------------------------


@pytest.fixture
def live(acme, make_provider, upstream):
    return make_provider(acme, name="live", base_url=upstream.base_url("live", "openai"), api_key=KEY)


def test_test_connection_shows_a_healthy_result_inline(dave_client, live, upstream, acme, as_tenant):
    r = dave_client.post(url("provider_test", "live"), **HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith(f'<tr id="provider-row-{live.pk}"')
    assert re.search(r'class="probe-result ok".*Test: <strong>healthy</strong> in \d+ ms', html, re.S)
    assert 'class="dot dot-healthy"' in html and KEY not in html
    assert upstream.counts("live")["probe"] == 1
    assert get(acme, as_tenant, "live").health_status == "healthy"


def test_test_connection_shows_a_failure_with_a_scrubbed_error(dave_client, live, upstream):
    upstream.configure("live", failure_rate=1.0, failure_scope="probe")
    html = dave_client.post(url("provider_test", "live"), **HX).content.decode()
    assert 'class="probe-result bad"' in html and "Test: <strong>unhealthy</strong>" in html
    assert re.search(r'<span class="probe-error">[^<]+</span>', html)
    assert KEY not in html and KEY[-8:] not in html


def test_test_connection_without_htmx_flashes_the_result(dave_client, live):
    r = dave_client.post(url("provider_test", "live"), follow=True)
    assert r.redirect_chain == [(LIST, 302)] and "live: healthy" in r.content.decode()


def test_test_connection_records_no_audit_entry(dave_client, live, acme, as_tenant):
    before = len(audit_entries(acme, as_tenant))
    dave_client.post(url("provider_test", "live"), **HX)
    assert len(audit_entries(acme, as_tenant)) == before


# --- delete ---------------------------------------------------------------------------------------


def test_delete_removes_the_row_and_updates_the_others_shares(dave_client, three, acme, as_tenant, one_entry):
    a, b, c = three
    r = dave_client.post(url("provider_delete", "a"), **HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert f"provider-row-{a.pk}" not in html and share_of(html, b.pk) == "100%" and share_of(html, c.pk)
    assert [p["name"] for p in rows(acme, as_tenant)] == ["b", "c"]
    entry = one_entry()
    assert (entry.action, entry.actor, entry.object_name, entry.after) == ("delete", "dave", "a", None)
    assert dave_client.post(url("provider_delete", "a"), **HX).status_code == 404  # repeated: gone


def test_the_list_asks_before_deleting(dave_client, three):
    html = dave_client.get(LIST).content.decode()
    assert 'hx-post="/providers/a/delete/"' in html and 'hx-confirm="Delete provider a?' in html


def test_deleting_the_last_provider_refreshes_to_the_empty_state(dave_client, acme, make_provider):
    make_provider(acme, name="only")
    r = dave_client.post(url("provider_delete", "only"), **HX)
    assert r.status_code == 200 and r.headers["HX-Refresh"] == "true"


def test_delete_without_htmx_redirects_with_a_message(dave_client, three):
    r = dave_client.post(url("provider_delete", "b"), follow=True)
    assert r.redirect_chain == [(LIST, 302)] and "Provider &#x27;b&#x27; deleted." in r.content.decode()


# --- operator controls ----------------------------------------------------------------------------


def test_an_operator_drains_a_provider_and_the_row_says_who_and_why(dave_client, three, acme, as_tenant, one_entry):
    a, b, _c = three
    r = dave_client.post(url("provider_state", "a"), {"state": "drained", "reason": "deploy #12",
                                                      "until": "2999-01-01T10:30"}, **HX)  # fmt: skip
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith(f'<tr id="provider-row-{a.pk}"')
    assert (
        "pill-drained" in html and "by dave" in html and "deploy #12" in html and "until 2999-01-01 10:30 UTC" in html
    )
    assert share_of(html, a.pk) == "off" and share_of(html, b.pk) == "100%"
    config = get(acme, as_tenant, "a")
    assert (config.operator_state, config.operator_by) == ("drained", "dave")
    assert config.operator_until == datetime.datetime(2999, 1, 1, 10, 30, tzinfo=datetime.UTC)
    entry = one_entry()
    assert (entry.action, entry.actor) == ("drain", "dave")


@pytest.mark.parametrize(
    "state, action", [("forced_unhealthy", "force_unhealthy"), ("forced_healthy", "force_healthy")]
)
def test_an_operator_forces_a_state(dave_client, three, acme, as_tenant, one_entry, state, action):
    assert dave_client.post(url("provider_state", "b"), {"state": state, "reason": "r"}, **HX).status_code == 200
    assert get(acme, as_tenant, "b").operator_state == state
    assert one_entry().action == action


def test_clear_releases_the_provider(dave_client, three, acme, as_tenant):
    dave_client.post(url("provider_state", "a"), {"state": "drained", "reason": "deploy"}, **HX)
    seen = len(audit_entries(acme, as_tenant))
    html = dave_client.post(url("provider_state", "a"), {"action": "clear"}, **HX).content.decode()
    assert "pill-drained" not in html and share_of(html, three[0].pk) == "60%"
    assert get(acme, as_tenant, "a").operator_state == ""
    dave_client.post(url("provider_state", "a"), {"action": "clear"}, **HX)  # repeated: a no-op
    assert [e.action for e in audit_entries(acme, as_tenant)[seen:]] == ["clear_state"]


def test_the_state_without_htmx_redirects_to_the_list(dave_client, three, acme, as_tenant):
    assert dave_client.post(url("provider_state", "a"), {"state": "drained", "reason": "x"}).status_code == 302
    assert get(acme, as_tenant, "a").operator_state == "drained"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"state": "drained", "reason": ""}, "reason"),
        ({"state": "drained", "reason": "   "}, "reason"),
        ({"state": "drained"}, "reason"),
        ({"state": "drained", "reason": "r" * 501}, "reason"),
        ({"state": "", "reason": "x"}, "state"),
        ({"state": "asleep", "reason": "x"}, "state"),
        ({"reason": "x"}, "state"),
        ({"state": "drained", "reason": "x", "until": "2001-01-01T00:00"}, "until"),
        ({"state": "drained", "reason": "x", "until": "next tuesday"}, "until"),
        ({"state": "drained", "reason": "x", "until": "2030-02-31T00:00"}, "until"),
        ({"state": "drained", "reason": "x", "until": "1" * 5000}, "until"),
        ({"action": "explode"}, "state"),
    ],
)
def test_bad_state_input_shows_the_error_in_the_open_controls_and_changes_nothing(dave_client, three, unchanged,
                                                                                  data, field):  # fmt: skip
    r = dave_client.post(url("provider_state", "a"), data, **HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert '<details class="operator-controls" open>' in html
    assert re.search(rf'<label for="{field}-{three[0].pk}">.*?<p class="field-error" role="alert">', html, re.S)
    unchanged()
    assert dave_client.post(url("provider_state", "a"), data).status_code == 400  # without htmx
    unchanged()


# --- roles and tenants ----------------------------------------------------------------------------

WRITES = [
    ("provider_add", None, FORM),
    ("provider_edit", "a", {**FORM, "name": "a", "weight": "1"}),
    ("provider_weight", "a", {"weight": "1"}),
    ("provider_priority", "a", {"priority": "9"}),
    ("provider_enabled", "a", {"enabled": "false"}),
    ("provider_test", "a", {}),
    ("provider_delete", "a", {}),
    ("provider_state", "a", {"state": "drained", "reason": "x"}),
    ("provider_state", "a", {"action": "clear"}),
]


@pytest.mark.parametrize("name, provider, data", WRITES)
def test_a_viewer_gets_403_on_every_write_and_nothing_changes(bob_client, three, unchanged, name, provider, data):
    assert bob_client.post(url(name, provider), data).status_code == 403
    assert bob_client.post(url(name, provider), data, **HX).status_code == 403
    unchanged()


def test_a_viewer_cannot_open_the_forms(bob_client, three):
    assert bob_client.get(url("provider_add")).status_code == 403
    assert bob_client.get(url("provider_edit", "a")).status_code == 403
    assert bob_client.get(url("provider_type_fields"), {"type": "ollama"}).status_code == 403


@pytest.mark.parametrize("name, provider, data", [w for w in WRITES if w[1]])
def test_another_tenants_admin_gets_404_and_nothing_changes(carol_client, three, unchanged, name, provider, data):
    assert carol_client.post(url(name, provider), data).status_code == 404
    assert carol_client.get(url(name, provider)).status_code == 404
    unchanged()


def test_carol_sees_only_her_own_providers(carol_client, three, globex, make_provider):
    make_provider(globex, name="globex-only")
    html = carol_client.get(LIST).content.decode()
    assert "globex-only" in html and 'data-provider="a"' not in html


@pytest.mark.parametrize("name", ["provider_weight", "provider_test", "provider_delete", "provider_state"])
def test_a_get_on_an_action_is_405_and_changes_nothing(dave_client, three, unchanged, name):
    assert dave_client.get(url(name, "a")).status_code == 405
    unchanged()


# --- the Django admin shares the error mapping ----------------------------------------------------


def test_the_admin_shows_a_rule_set_error_next_to_its_field(acme, as_tenant, unchanged):
    from django.test import Client

    from tests.factories import UserFactory

    root = Client()
    root.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    data = {**FORM, "tenant": acme.pk, "weight": "101", "settings": "{}"}
    r = root.post("/admin/providers/providerconfig/add/", data)
    assert r.status_code == 200
    page = r.content.decode()
    assert re.search(r'class="[^"]*field-weight[^"]*"', page) and "Must be between 0 and 100" in page
    assert KEY not in page
    unchanged()
