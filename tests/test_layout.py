"""The house's layout (STYLE.md "Layout"): imports point one way, and the product's
import graph has no cycle, counting imports inside functions and under TYPE_CHECKING.

`make test` also runs `lint-imports` with the contracts in pyproject.toml; these tests
read the same layers and show that they would catch an upward import."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

from providers.models import HealthStatus
from routing.health import status

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("axonflow_site", "tenants", "providers", "usage", "routing", "console")
TEST_DOUBLES = "providers.fake_upstream"  # a fake server, not the product (never imported by it)


def build() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return build()


def layers() -> list[grimp.Layer]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [grimp.Layer(*(m.strip() for m in layer.split("|")), independent=True) for layer in contract["layers"]]


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def product(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if m.split(".")[0] in PACKAGES and not m.startswith(TEST_DOUBLES)}


def test_the_products_import_graph_has_no_cycle(graph):
    assert cycles(graph, product(graph)) == []


def test_the_cycle_finder_finds_a_cycle_when_there_is_one():
    graph = build()
    graph.add_import(importer="providers.pricing", imported="providers.adapters.http")  # http imports pricing
    assert cycles(graph, product(graph)) == [["providers.adapters.http", "providers.pricing"]]


@pytest.mark.parametrize(
    "one, other",
    [
        ("routing.health", "console"),  # health derivation rendered the board's HTML
        ("routing.router", "usage"),  # usage accounting was typed against router internals
        ("providers.adapters.base", "providers.adapters.http"),  # base and http imported each other
        ("providers.adapters.base", "providers.pricing"),
        ("tenants", "providers"),  # tenancy imported provider models and errors
    ],
)
def test_the_cycles_of_the_old_layout_are_gone(graph, one, other):
    there = graph.chain_exists(importer=one, imported=other, as_packages=True)
    back = graph.chain_exists(importer=other, imported=one, as_packages=True)
    assert not (there and back)


def test_every_layer_imports_only_the_layers_below_it(graph):
    assert graph.find_illegal_dependencies_for_layers(layers=layers()) == set()


def test_an_upward_import_breaks_the_layers():
    graph = build()
    graph.add_import(importer="tenants.models", imported="providers.models")
    broken = graph.find_illegal_dependencies_for_layers(layers=layers())
    assert {(d.importer, d.imported) for d in broken} == {("tenants", "providers")}


def test_health_status_names_match_the_models_choices():
    # status.py repeats them so that it imports no Django.
    assert (status.HEALTHY, status.DEGRADED, status.UNHEALTHY, status.UNKNOWN) == (
        HealthStatus.HEALTHY.value,
        HealthStatus.DEGRADED.value,
        HealthStatus.UNHEALTHY.value,
        HealthStatus.UNKNOWN.value,
    )
