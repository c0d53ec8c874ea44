"""providers/routes.py: the rule set for model routes, the one writer and its audit
entries, and the shared namespace of route and provider names."""

from __future__ import annotations

import pytest

from axonflow_site.errors import DuplicateProvider, ValidationFailed
from providers.models import ModelRoute, ModelRouteTarget
from providers.routes import delete_model_route, save_model_route, validate_model_route
from providers.validation import validate_provider_config
from tenants.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(acme, make_provider):
    """Two providers of acme: `openai-main` (gpt-4o-mini) and `claude` (claude-3-haiku)."""
    return (
        make_provider(acme, name="openai-main", model="gpt-4o-mini"),
        make_provider(acme, name="claude", type="anthropic", model="claude-3-haiku"),
    )


def body(**overrides):
    data = {"name": "fast", "description": "cheap and quick", "targets": [{"provider": "openai-main", "weight": 70},
            {"provider": "claude", "model": "claude-3-5-haiku", "weight": 30}]}  # fmt: skip
    data.update(overrides)
    return data


def create(tenant, as_tenant, **overrides) -> ModelRoute:
    with as_tenant(tenant):
        return save_model_route(tenant, validate_model_route(tenant, body(**overrides)))


def audit_entries(tenant, as_tenant):
    with as_tenant(tenant):
        return list(AuditEntry.objects.filter(tenant=tenant, object_type="model_route").order_by("pk"))


def test_it_cleans_a_route_and_fills_the_providers_own_model(acme, pair, as_tenant):
    with as_tenant(acme):
        cleaned = validate_model_route(acme, body())
    assert cleaned.name == "fast" and cleaned.description == "cheap and quick"
    assert [(t.provider.name, t.model, t.weight) for t in cleaned.targets] == [
        ("openai-main", "gpt-4o-mini", 70),
        ("claude", "claude-3-5-haiku", 30),
    ]


def test_weight_defaults_to_50_and_blank_or_null_model_means_the_providers(acme, pair, as_tenant):
    targets = [{"provider": "openai-main", "model": ""}, {"provider": "claude", "model": None}]
    with as_tenant(acme):
        cleaned = validate_model_route(acme, body(targets=targets))
    assert [(t.model, t.weight) for t in cleaned.targets] == [("gpt-4o-mini", 50), ("claude-3-haiku", 50)]


def test_form_strings_are_accepted_for_weights(acme, pair, as_tenant):
    with as_tenant(acme):
        cleaned = validate_model_route(acme, body(targets=[{"provider": "claude", "weight": " 7 "}]))
    assert cleaned.targets[0].weight == 7


@pytest.mark.parametrize("name", ["fast", "gpt-4o", "support-bot", "llama3:8b", "a.b_c-d:e", "9lives", "x" * 128])
def test_it_accepts_names(name, acme, pair, as_tenant):
    with as_tenant(acme):
        assert validate_model_route(acme, body(name=name)).name == name


@pytest.mark.parametrize(
    "name",
    ["", "   ", "-fast", ".fast", ":fast", "_fast", "fa st", "fa/st", "fäst", "x" * 129, "auto", "AUTO", "fast\n1",
     "fast?", "fast#1", "fast%20", 7, None, ["fast"], {"n": 1}, True],
)  # fmt: skip
def test_it_refuses_bad_names(name, acme, pair, as_tenant):
    with as_tenant(acme), pytest.raises(ValidationFailed) as exc:
        validate_model_route(acme, body(name=name))
    assert exc.value.details["field"] == "name"


def test_surrounding_spaces_are_trimmed(acme, pair, as_tenant):
    with as_tenant(acme):
        assert validate_model_route(acme, body(name="  fast ", description="  hi  ")).description == "hi"


@pytest.mark.parametrize(
    "targets, field",
    [
        (None, "targets"),
        ("openai-main", "targets"),
        ({"provider": "openai-main"}, "targets"),
        ([], "targets"),
        (["openai-main"], "targets[0]"),
        ([{"provider": "openai-main"}, 5], "targets[1]"),
        ([{"provider": "openai-main", "priority": 1}], "targets[0]"),
        ([{}], "targets[0].provider"),
        ([{"provider": ""}], "targets[0].provider"),
        ([{"provider": 3}], "targets[0].provider"),
        ([{"provider": None}], "targets[0].provider"),
        ([{"provider": "nope"}], "targets[0].provider"),
        ([{"provider": "openai-main"}, {"provider": "openai-main"}], "targets[1].provider"),
        ([{"provider": "openai-main", "model": 4}], "targets[0].model"),
        ([{"provider": "openai-main", "model": ["m"]}], "targets[0].model"),
        ([{"provider": "openai-main", "model": "m" * 201}], "targets[0].model"),
        ([{"provider": "openai-main", "weight": -1}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": 101}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": 50.5}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": 50.0}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": True}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": None}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": "lots"}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": "1e2"}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": float("nan")}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": float("inf")}], "targets[0].weight"),
        ([{"provider": "openai-main", "weight": 10**30}], "targets[0].weight"),
    ],
)
def test_it_refuses_bad_targets(targets, field, acme, pair, as_tenant):
    with as_tenant(acme), pytest.raises(ValidationFailed) as exc:
        validate_model_route(acme, body(targets=targets))
    assert exc.value.details["field"] == field


def test_an_unknown_provider_is_named_in_the_error(acme, pair, as_tenant):
    with as_tenant(acme), pytest.raises(ValidationFailed) as exc:
        validate_model_route(acme, body(targets=[{"provider": "claude"}, {"provider": "ghost"}]))
    assert "ghost" in exc.value.message
    assert exc.value.details == {"field": "targets[1].provider", "target": 1, "provider": "ghost"}


def test_another_tenants_provider_is_as_unknown_as_a_missing_one(acme, globex, pair, make_provider, as_tenant):
    make_provider(globex, name="globex-only")
    with as_tenant(acme), pytest.raises(ValidationFailed) as exc:
        validate_model_route(acme, body(targets=[{"provider": "globex-only"}]))
    assert exc.value.details["provider"] == "globex-only"


def test_it_allows_32_targets_and_refuses_33(acme, make_provider, as_tenant):
    for i in range(33):
        make_provider(acme, name=f"p{i}")
    targets = [{"provider": f"p{i}"} for i in range(33)]
    with as_tenant(acme):
        assert len(validate_model_route(acme, body(targets=targets[:32])).targets) == 32
        with pytest.raises(ValidationFailed) as exc:
            validate_model_route(acme, body(targets=targets))
    assert exc.value.details["field"] == "targets"


@pytest.mark.parametrize(
    "data",
    [None, [], "fast", 3, {"name": "fast"}, {"targets": [{"provider": "claude"}]},
     {**body(), "weight": 3}, {**body(), "provider": "claude"}, body(description=4), body(description="d" * 501)],
)  # fmt: skip
def test_it_refuses_bad_bodies(data, acme, pair, as_tenant):
    with as_tenant(acme), pytest.raises(ValidationFailed):
        validate_model_route(acme, data)


def test_route_names_are_unique_per_tenant(acme, globex, pair, make_provider, as_tenant):
    create(acme, as_tenant)
    with as_tenant(acme), pytest.raises(DuplicateProvider) as exc:
        validate_model_route(acme, body())
    assert exc.value.details == {"field": "name", "name": "fast"}
    make_provider(globex, name="openai-main")
    assert create(globex, as_tenant, targets=[{"provider": "openai-main"}]).name == "fast"  # another tenant may


def test_a_route_may_not_take_a_providers_name(acme, pair, as_tenant):
    with as_tenant(acme), pytest.raises(DuplicateProvider) as exc:
        validate_model_route(acme, body(name="claude"))
    assert "claude" in exc.value.message


def test_a_provider_may_not_take_a_routes_name(acme, pair, as_tenant):
    create(acme, as_tenant)
    with as_tenant(acme), pytest.raises(DuplicateProvider) as exc:
        validate_provider_config(acme, {"name": "fast", "type": "openai", "model": "gpt-4o"})
    assert "model route" in exc.value.message
    openai_main = pair[0]
    with as_tenant(acme):  # renaming a provider onto the route's name is refused too
        with pytest.raises(DuplicateProvider):
            validate_provider_config(acme, {"name": "fast"}, openai_main)
        assert validate_provider_config(acme, {"name": "openai-main", "weight": 5}, openai_main)["weight"] == 5


def test_it_saves_a_route_with_its_targets_in_order(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    with as_tenant(acme):
        targets = list(ModelRouteTarget.objects.filter(route=route).values_list("provider__name", "model", "weight",
                                                                                 "position", "tenant_id"))  # fmt: skip
    assert targets == [("openai-main", "gpt-4o-mini", 70, 0, acme.pk), ("claude", "claude-3-5-haiku", 30, 1, acme.pk)]


def test_a_create_leaves_one_audit_entry_with_the_whole_route(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    (entry,) = audit_entries(acme, as_tenant)
    assert (entry.action, entry.object_name, entry.object_id, entry.before) == ("create", "fast", str(route.pk), None)
    assert entry.after == {"name": "fast", "description": "cheap and quick", "targets": [
        {"provider": "openai-main", "model": "gpt-4o-mini", "weight": 70},
        {"provider": "claude", "model": "claude-3-5-haiku", "weight": 30}]}  # fmt: skip


def test_an_update_replaces_the_targets_with_one_audit_entry(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    with as_tenant(acme):
        cleaned = validate_model_route(acme, {"targets": [{"provider": "claude", "weight": 100}]}, route)
        save_model_route(acme, cleaned, route)
        assert list(route.targets.values_list("provider__name", "weight")) == [("claude", 100)]
        assert ModelRouteTarget.objects.filter(tenant=acme).count() == 1
        route.refresh_from_db()
    assert (route.name, route.description) == ("fast", "")  # name kept, description replaced
    create_entry, update = audit_entries(acme, as_tenant)
    assert update.action == "update"
    assert update.before == {"description": "cheap and quick", "targets": create_entry.after["targets"]}
    assert update.after == {"description": "", "targets": [{"provider": "claude", "model": "claude-3-haiku",
                                                             "weight": 100}]}  # fmt: skip


def test_an_update_that_changes_nothing_writes_no_audit_entry(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    with as_tenant(acme):
        save_model_route(acme, validate_model_route(acme, body(), route), route)
    assert len(audit_entries(acme, as_tenant)) == 1


def test_a_route_may_be_renamed_but_not_onto_another_route(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    other = create(acme, as_tenant, name="slow")
    with as_tenant(acme):
        save_model_route(acme, validate_model_route(acme, body(name="quick"), route), route)
        with pytest.raises(DuplicateProvider):
            validate_model_route(acme, body(name="quick"), other)
        assert sorted(ModelRoute.objects.values_list("name", flat=True)) == ["quick", "slow"]


def test_delete_removes_the_targets_with_one_audit_entry(acme, pair, as_tenant):
    route = create(acme, as_tenant)
    with as_tenant(acme):
        delete_model_route(route)
        assert not ModelRoute.objects.exists() and not ModelRouteTarget.objects.exists()
    _create, entry = audit_entries(acme, as_tenant)
    assert (entry.action, entry.object_name, entry.after) == ("delete", "fast", None)
    assert entry.before["targets"][0]["provider"] == "openai-main"


def test_a_lost_name_race_is_a_conflict_and_writes_nothing(acme, pair, as_tenant):
    with as_tenant(acme):
        cleaned = validate_model_route(acme, body())
    create(acme, as_tenant)  # another request saved the same name in between
    with as_tenant(acme), pytest.raises(DuplicateProvider):
        save_model_route(acme, cleaned)
    with as_tenant(acme):
        assert ModelRoute.objects.count() == 1 and ModelRouteTarget.objects.count() == 2
    assert len(audit_entries(acme, as_tenant)) == 1
