"""The model routes pages: everyone reads, operators create, edit and delete (plain
forms and htmx), errors come back next to their field with nothing changed, and each
change leaves one audit entry by the user."""

from __future__ import annotations

import pytest

from providers.models import ModelRoute, ModelRouteTarget
from tenants.models import AuditEntry

pytestmark = pytest.mark.django_db

LIST, ADD = "/routes/", "/routes/new/"
HX = {"HX-Request": "true"}


def edit_url(name: str) -> str:
    return f"/routes/{name}/edit/"


def delete_url(name: str) -> str:
    return f"/routes/{name}/delete/"


@pytest.fixture
def pair(acme, make_provider):
    return (
        make_provider(acme, name="openai-main", model="gpt-4o-mini"),
        make_provider(acme, name="claude", type="anthropic", model="claude-3-haiku", enabled=False),
    )


def form(name="fast", description="", rows=(("openai-main", "", "70"), ("claude", "claude-3-5-haiku", "30"))):
    return {
        "name": name,
        "description": description,
        "target_provider": [r[0] for r in rows],
        "target_model": [r[1] for r in rows],
        "target_weight": [r[2] for r in rows],
    }


def state(tenant, as_tenant):
    with as_tenant(tenant):
        return (
            list(ModelRoute.objects.filter(tenant=tenant).order_by("pk").values()),
            list(ModelRouteTarget.objects.filter(tenant=tenant).order_by("pk").values()),
            AuditEntry.objects.filter(tenant=tenant).count(),
        )


def targets_of(tenant, as_tenant, name="fast"):
    with as_tenant(tenant):
        route = ModelRoute.objects.get(tenant=tenant, name=name)
        return list(route.targets.values_list("provider__name", "model", "weight"))


def route_audit(tenant, as_tenant):
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant, object_type="model_route").order_by("pk"))


# --- reading ---------------------------------------------------------------------------------


def test_the_list_shows_routes_targets_and_shares(acme_world, bob_client, dave_client):
    r = dave_client.get(LIST)
    assert r.status_code == 200
    html = r.content.decode()
    assert "acme-fast" in html and "acme-primary" in html and "gpt-4o-mini" in html and "100%" in html
    assert "css/routes.css" in html
    assert edit_url("acme-fast") in html and delete_url("acme-fast") in html and ADD in html
    assert 'hx-confirm="Delete the model route acme-fast?' in html


def test_a_viewer_reads_the_list_without_write_controls(acme_world, bob_client):
    html = bob_client.get(LIST).content.decode()
    assert "acme-fast" in html
    assert ADD not in html and edit_url("acme-fast") not in html and delete_url("acme-fast") not in html


def test_an_empty_list_says_so_and_offers_to_add_one(dave, dave_client, bob, bob_client):
    html = dave_client.get(LIST).content.decode()
    assert "No model routes yet" in html and ADD in html
    html = bob_client.get(LIST).content.decode()
    assert "No model routes yet" in html and ADD not in html


def test_the_navigation_links_to_the_page(acme_world, bob_client):
    assert 'href="/routes/"' in bob_client.get("/").content.decode()


def test_a_route_without_targets_is_flagged(acme_world, bob_client, as_tenant):
    with as_tenant(acme_world.tenant):
        ModelRouteTarget.objects.all().delete()
    assert "No targets" in bob_client.get(LIST).content.decode()


def test_standby_and_disabled_targets_are_marked(acme, pair, dave_client):
    dave_client.post(ADD, form(rows=(("openai-main", "", "10"), ("claude", "", "0"))))
    html = dave_client.get(LIST).content.decode()
    assert "standby" in html and "disabled" in html and "100%" in html


def test_the_list_takes_a_bounded_number_of_queries(acme, make_provider, dave_client, django_assert_max_num_queries):
    for i in range(8):
        make_provider(acme, name=f"p{i}")
        dave_client.post(ADD, form(name=f"r{i}", rows=[(f"p{j}", "", "5") for j in range(i + 1)]))
    with django_assert_max_num_queries(15):
        r = dave_client.get(LIST)
    assert r.content.decode().count('id="route-') == 8


def test_only_the_active_tenants_routes_are_listed(acme_world, globex_world, carol_client):
    html = carol_client.get(LIST).content.decode()
    assert "globex-fast" in html and "acme-fast" not in html


# --- creating --------------------------------------------------------------------------------


def test_the_add_form_offers_the_tenants_providers_only(acme, globex, pair, make_provider, dave_client):
    make_provider(globex, name="globex-secret")
    html = dave_client.get(ADD).content.decode()
    assert 'name="target_provider"' in html and 'value="openai-main" data-model="gpt-4o-mini"' in html
    assert "claude (anthropic) · disabled" in html and "globex-secret" not in html
    assert 'id="route-target-template"' in html and "js/routes.js" in html


def test_the_add_form_without_providers_points_to_the_providers_page(acme, dave_client):
    html = dave_client.get(ADD).content.decode()
    assert "No providers yet" in html and 'name="target_provider"' not in html


def test_an_operator_creates_a_route_with_a_plain_form(acme, pair, dave_client, as_tenant):
    r = dave_client.post(ADD, form(description="quick"))
    assert r.status_code == 302 and r["Location"] == LIST
    assert targets_of(acme, as_tenant) == [("openai-main", "gpt-4o-mini", 70), ("claude", "claude-3-5-haiku", 30)]
    (entry,) = route_audit(acme, as_tenant)
    assert (entry.action, entry.actor_kind, entry.actor, entry.object_name) == ("create", "user", "dave", "fast")
    assert entry.after["description"] == "quick" and len(entry.after["targets"]) == 2
    assert "Model route fast saved." in dave_client.get(LIST).content.decode()


def test_an_htmx_create_answers_with_a_client_redirect(acme, pair, dave_client, as_tenant):
    r = dave_client.post(ADD, form(), headers=HX)
    assert r.status_code == 200 and r["HX-Redirect"] == LIST
    assert len(targets_of(acme, as_tenant)) == 2


def test_blank_rows_are_skipped_and_blank_weight_is_50(acme, pair, dave_client, as_tenant):
    r = dave_client.post(ADD, form(rows=(("", "", "50"), ("claude", "", ""), ("", "", ""))))
    assert r.status_code == 302
    assert targets_of(acme, as_tenant) == [("claude", "claude-3-haiku", 50)]


def test_posting_the_same_form_twice_creates_one_route(acme, pair, dave_client, as_tenant):
    dave_client.post(ADD, form())
    before = state(acme, as_tenant)
    r = dave_client.post(ADD, form(), headers=HX)
    assert r.status_code == 200 and "already exists" in r.content.decode()
    assert state(acme, as_tenant) == before


BAD_FORMS = [
    # (form, text shown, where: "name" | "description" | "targets" | a target row index)
    (form(name=""), "is required", "name"),
    (form(name="auto"), "reserved", "name"),
    (form(name="has space"), "letters, digits", "name"),
    (form(name="-dash"), "letters, digits", "name"),
    (form(name="x" * 129), "letters, digits", "name"),
    (form(name="openai-main"), "already exists", "name"),
    (form(name="existing"), "already exists", "name"),
    (form(description="d" * 501), "at most 500", "description"),
    (form(rows=()), "at least one", "targets"),
    (form(rows=(("", "", ""),)), "at least one", "targets"),
    (form(rows=[("openai-main", "", "5")] * 33), "at most 32", "targets"),
    (form(rows=(("openai-main", "", "5"), ("", "gpt-4o", "5"))), "is required", 1),
    (form(rows=(("ghost", "", "5"),)), "no provider named &#x27;ghost&#x27;", 0),
    (form(rows=(("globex-main", "", "5"),)), "no provider named &#x27;globex-main&#x27;", 0),
    (form(rows=(("claude", "", "5"), ("claude", "", "6"))), "already target 1", 1),
    (form(rows=(("claude", "m" * 201, "5"),)), "at most 200", 0),
    (form(rows=(("claude", "", "101"),)), "between 0 and 100", 0),
    (form(rows=(("claude", "", "-1"),)), "between 0 and 100", 0),
    (form(rows=(("claude", "", "2.5"),)), "must be an integer", 0),
    (form(rows=(("claude", "", "lots"),)), "must be an integer", 0),
]


@pytest.mark.parametrize("data, text, where", BAD_FORMS)
def test_bad_forms_come_back_as_the_fragment_with_the_error_and_change_nothing(
    data, text, where, acme, globex, pair, make_provider, dave_client, as_tenant
):
    make_provider(globex, name="globex-main")
    dave_client.post(ADD, form(name="existing"))
    before = state(acme, as_tenant)
    r = dave_client.post(ADD, data, headers=HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith("<form") and "<html" not in html  # the fragment, not the layout
    assert text in html, html
    if isinstance(where, int):
        row = html.split('<tr class="target-row')[where + 1]
        assert "has-error" in row.split(">")[0] and text in row
    elif where == "targets":
        assert "route-targets-fieldset has-error" in html
    else:
        assert f'id="route-{where}-error"' in html and 'aria-invalid="true"' in html
    assert state(acme, as_tenant) == before


def test_a_bad_plain_form_re_renders_the_page_with_the_values_kept(acme, pair, dave_client, as_tenant):
    r = dave_client.post(ADD, form(name="fast", description="kept", rows=(("claude", "my-model", "101"),)))
    html = r.content.decode()
    assert r.status_code == 200 and "<html" in html and "between 0 and 100" in html
    assert 'value="kept"' in html and 'value="my-model"' in html and 'value="101"' in html
    assert 'value="claude" data-model="claude-3-haiku" selected' in html
    assert state(acme, as_tenant)[0] == []


# --- editing and deleting --------------------------------------------------------------------


def test_the_edit_form_shows_the_route(acme_world, dave_client):
    html = dave_client.get(edit_url("acme-fast")).content.decode()
    assert 'value="acme-fast"' in html and 'value="acme-primary" data-model="gpt-4o-mini" selected' in html
    assert 'value="gpt-4o-mini"' in html and 'value="50"' in html and "Save route" in html


def test_an_operator_edits_a_route_with_one_audit_entry(acme, pair, dave_client, as_tenant):
    dave_client.post(ADD, form())
    r = dave_client.post(edit_url("fast"), form(rows=(("claude", "", "100"),)), headers=HX)
    assert r.status_code == 200 and r["HX-Redirect"] == LIST
    assert targets_of(acme, as_tenant) == [("claude", "claude-3-haiku", 100)]
    _create, update = route_audit(acme, as_tenant)
    assert (update.action, update.actor) == ("update", "dave")
    assert update.after == {"targets": [{"provider": "claude", "model": "claude-3-haiku", "weight": 100}]}


def test_saving_an_unchanged_route_writes_no_audit_entry(acme, pair, dave_client, as_tenant):
    dave_client.post(ADD, form())
    dave_client.post(edit_url("fast"), form(rows=(("openai-main", "gpt-4o-mini", "70"),
                                                  ("claude", "claude-3-5-haiku", "30"))))  # fmt: skip
    assert len(route_audit(acme, as_tenant)) == 1


def test_a_route_can_be_renamed(acme, pair, dave_client, as_tenant):
    dave_client.post(ADD, form(name="llama3:8b"))
    r = dave_client.post(edit_url("llama3:8b"), form(name="gpt-4.1"))
    assert r.status_code == 302
    with as_tenant(acme):
        assert list(ModelRoute.objects.values_list("name", flat=True)) == ["gpt-4.1"]
    assert dave_client.get(edit_url("gpt-4.1")).status_code == 200


def test_an_edit_error_keeps_the_route_and_comes_back_inline(acme, pair, dave_client, as_tenant):
    dave_client.post(ADD, form())
    before = state(acme, as_tenant)
    r = dave_client.post(edit_url("fast"), form(name="claude"), headers=HX)
    assert r.status_code == 200 and "already exists" in r.content.decode()
    assert f'hx-post="{edit_url("fast")}"' in r.content.decode()  # still posts to the old name
    assert state(acme, as_tenant) == before


def test_an_htmx_delete_returns_the_list_without_the_route(acme_world, dave_client, as_tenant):
    r = dave_client.post(delete_url("acme-fast"), headers=HX)
    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith('<div id="routes">') and "No model routes yet" in html
    with as_tenant(acme_world.tenant):
        assert not ModelRoute.objects.exists() and not ModelRouteTarget.objects.exists()
    (entry,) = route_audit(acme_world.tenant, as_tenant)
    assert (entry.action, entry.actor, entry.object_name) == ("delete", "dave", "acme-fast")
    assert entry.before["targets"] == [{"provider": "acme-primary", "model": "gpt-4o-mini", "weight": 50}]


def test_a_plain_delete_redirects_and_a_repeat_changes_nothing(acme_world, dave_client, as_tenant):
    r = dave_client.post(delete_url("acme-fast"))
    assert r.status_code == 302 and r["Location"] == LIST
    before = state(acme_world.tenant, as_tenant)
    assert dave_client.post(delete_url("acme-fast")).status_code == 404
    assert state(acme_world.tenant, as_tenant) == before


def test_delete_wants_a_post(acme_world, dave_client, as_tenant):
    assert dave_client.get(delete_url("acme-fast")).status_code == 405
    with as_tenant(acme_world.tenant):
        assert ModelRoute.objects.exists()


# --- roles and tenants -----------------------------------------------------------------------


def test_a_viewer_cannot_create_edit_or_delete(acme_world, bob_client, as_tenant):
    before = state(acme_world.tenant, as_tenant)
    assert bob_client.get(ADD).status_code == 403
    assert bob_client.get(edit_url("acme-fast")).status_code == 403
    assert bob_client.post(ADD, form(name="x", rows=(("acme-primary", "", "5"),))).status_code == 403
    assert bob_client.post(edit_url("acme-fast"), form(name="x", rows=(("acme-primary", "", "5"),))).status_code == 403
    assert bob_client.post(delete_url("acme-fast"), headers=HX).status_code == 403
    assert state(acme_world.tenant, as_tenant) == before


def test_another_tenants_admin_gets_404_and_changes_nothing(acme_world, globex_world, carol_client, as_tenant):
    before = state(acme_world.tenant, as_tenant), state(globex_world.tenant, as_tenant)
    assert carol_client.get(edit_url("acme-fast")).status_code == 404
    assert carol_client.post(edit_url("acme-fast"), form(name="x", rows=(("globex-primary", "", "5"),))).status_code == 404  # fmt: skip
    assert carol_client.post(delete_url("acme-fast"), headers=HX).status_code == 404
    assert (state(acme_world.tenant, as_tenant), state(globex_world.tenant, as_tenant)) == before


def test_an_admin_may_do_what_an_operator_may(acme, alice, pair, alice_client, as_tenant):
    assert alice_client.post(ADD, form()).status_code == 302
    assert alice_client.post(delete_url("fast")).status_code == 302
    assert [e.actor for e in route_audit(acme, as_tenant)] == ["alice", "alice"]
