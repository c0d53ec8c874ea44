"""The Grafana dashboard (docs/grafana/axonflow.json) and the alerting rules (docs/alerts.yml)
cannot rot: every metric they read is one GET /metrics exports, with the labels and label
values it has, read from the code (axonflow_site/metrics.py and routing/scrape.py), not
from a list kept here; every section of the dashboard is there; the JSON imports as is;
every rule says how long, how bad and what.

The PromQL is read by a small checker (`read`), not a parser: it finds the selectors, the
grouping labels and the function names, and reports anything it does not know. The last
tests make sure it does report them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from axonflow_site import metrics
from routing.scrape import BudgetStates, ProviderStates
from tenants.rls import tenant_context
from usage.models import Budget
from usage.observe import error_class

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "axonflow.json"
ALERTS = ROOT / "docs" / "alerts.yml"

# The samples of a family, by its type (the exposition also has `_created`, which no
# dashboard should read).
SAMPLES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
TARGET_LABELS = frozenset({"instance", "job"})  # Prometheus adds them to every series it scrapes
# Attempt outcomes as routing/route.py records them; usage/observe.py turns them into the
# outcome and error_class label values.
ATTEMPT_OUTCOMES = (
    "success", "rate_limited", "client_cancelled", "http_429", "http_401", "http_403", "http_500", "http_400",
    "timeout", "connect_error", "malformed", "stream_error", "invalid_config", "anything_else",
)  # fmt: skip

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}  # fmt: skip
FUNCTIONS = AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "double_exponential_smoothing", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc", "sqrt", "time",
    "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "mad_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh",
    "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "atan2", "inf", "nan"}  # fmt: skip

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^{}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
RANGE = re.compile(r"\[[^\[\]]*\]")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(\s*\()?")
LABEL_VALUES = re.compile(r"\s*label_values\((?:(.*),)?\s*([a-zA-Z_]\w*)\s*\)\s*")
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
LITERALS = re.compile(r"[\w|]+")


@dataclass(frozen=True)
class Exported:
    labels: dict[str, frozenset[str]]  # sample name: its label names
    values: dict[tuple[str, str], frozenset[str]]  # (sample name, label): every value it takes, where known

    def without(self, name: str) -> Exported:
        return replace(self, labels={k: v for k, v in self.labels.items() if k != name})


def family_samples(name: str, kind: str, labels) -> dict[str, frozenset[str]]:
    assert kind in SAMPLES, f"{name} is a {kind}: tell SAMPLES which samples such a family exports"
    return {
        name + suffix: frozenset(labels) | (frozenset({"le"}) if suffix == "_bucket" else frozenset())
        for suffix in SAMPLES[kind]
    }


@pytest.fixture
def exported(acme, make_provider) -> Exported:
    """Every sample name GET /metrics can export, from the families themselves: those of
    axonflow_site/metrics.py and those routing/scrape.py reads when scraped (one provider
    here, so that they have samples to read labels and values from)."""
    labels, values = {}, {}
    for family in vars(metrics).values():
        if isinstance(family, MetricWrapperBase):
            labels.update(family_samples(family._name, family._type, family._labelnames))
    make_provider(acme, name="a")
    with tenant_context(acme.pk):
        Budget.objects.create(tenant=acme, name="monthly", limit_usd=1)
    for family in [*ProviderStates().collect(), *BudgetStates().collect()]:
        assert family.samples, f"{family.name}: no sample for a configured provider"
        names = {key for sample in family.samples for key in sample.labels}
        labels.update(family_samples(family.name, family.type, names))
        for label in names - {"tenant", "provider", "budget"}:  # the state sets: status, state
            values[family.name, label] = frozenset(sample.labels[label] for sample in family.samples)
    attempts = [error_class(outcome) for outcome in ATTEMPT_OUTCOMES]
    values["axonflow_attempts_total", "outcome"] = frozenset(outcome for outcome, _ in attempts)
    values["axonflow_attempts_total", "error_class"] = frozenset(kind for _, kind in attempts)
    assert "axonflow_requests_total" in labels and "axonflow_provider_health" in labels
    return Exported(labels, values)


def mask_strings(expr: str) -> str:
    """`expr` with the inside of every string literal blanked, the same length."""
    return STRING.sub(lambda m: m.group()[0] + "_" * (len(m.group()) - 2) + m.group()[-1], expr)


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]] | None]]:
    """(metric name, [(label, operator, value)]) of every `name{...}` in `expr`; None for
    matchers that cannot be read."""
    masked = mask_strings(expr)
    found = []
    for m in SELECTOR.finditer(masked):
        body = expr[m.start(2) : m.end(2)]
        matchers = [(g[0], g[1], g[2]) for g in MATCHER.findall(body)]
        found.append((m.group(1), matchers if not MATCHER.sub("", body).strip() else None))
    return found


def balanced(expr: str) -> bool:
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for char in mask_strings(expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def read(expr: str, exported: Exported) -> tuple[set[str], list[str]]:
    """(metric names `expr` reads, problems): names not exported, labels a metric does not
    have, values a label never takes, functions PromQL does not know, unbalanced brackets."""
    problems = [] if balanced(expr) else [f"unbalanced brackets in {expr!r}"]
    for name, matchers in selectors(expr):
        if name is None:
            problems.append(f"a selector without a metric name in {expr!r}")
        if matchers is None:
            problems.append(f"unreadable label matchers of {name} in {expr!r}")
        if name not in exported.labels or not matchers:
            continue
        for label, op, value in matchers:
            if label not in exported.labels[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
            known = exported.values.get((name, label))
            if known is None or "$" in value:
                continue
            wanted = value.split("|") if op in ("=~", "!~") and LITERALS.fullmatch(value) else [value]
            problems += [f"{name}{{{label}}} is never {each!r}" for each in wanted if each not in known]
    text = GRAFANA_VARIABLE.sub("0", mask_strings(expr))
    text = SELECTOR.sub(lambda m: f"{m.group(1) or ''} ", text)
    text = RANGE.sub(" ", STRING.sub(" ", text))
    groupings = [label.strip() for m in GROUPING.finditer(text) for label in m.group(2).split(",") if label.strip()]
    text = GROUPING.sub(" ", text)
    names = set()
    for m in IDENTIFIER.finditer(text):
        token, call = m.group(1), m.group(2)
        if token.lower() in KEYWORDS:
            continue
        if call:
            if token not in FUNCTIONS:
                problems.append(f"unknown function {token}() in {expr!r}")
            continue
        names.add(token)
        if token not in exported.labels:
            problems.append(f"{token} is not exported (read in {expr!r})")
    present = TARGET_LABELS.union(*(exported.labels.get(name, frozenset()) for name in names))
    problems += [f"no metric of {expr!r} has the label {label!r}" for label in groupings if label not in present]
    return names, problems


def read_variable(query: str, exported: Exported) -> tuple[set[str], list[str]]:
    """A Grafana variable query: `label_values(selector, label)` or `label_values(label)`."""
    m = LABEL_VALUES.fullmatch(query)
    if m is None:
        return set(), [f"unreadable variable query {query!r}"]
    if m.group(1) is None:
        return set(), [] if any(m.group(2) in labels for labels in exported.labels.values()) else [query]
    names, problems = read(m.group(1), exported)
    if not any(m.group(2) in exported.labels.get(name, ()) for name in names):
        problems.append(f"no metric of {query!r} has the label {m.group(2)!r}")
    return names, problems


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def panels(within: dict):
    """Every panel, those inside a row (a collapsed row keeps its panels) included."""
    for panel in within.get("panels", []):
        yield panel
        yield from panels(panel)


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def variable_query(variable: dict) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def dashboard_problems(exported: Exported) -> tuple[set[str], list[str]]:
    dashboard, used, problems = load_dashboard(), set(), []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            names, found = read(target["expr"], exported)
            used |= names
            problems += [f"panel {panel['title']!r} {target['refId']}: {problem}" for problem in found]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            names, found = read_variable(variable_query(variable), exported)
            used |= names
            problems += [f"variable {variable['name']}: {problem}" for problem in found]
    return used, problems


def alert_problems(exported: Exported) -> tuple[set[str], list[str]]:
    used, problems = set(), []
    for rule in load_rules():
        names, found = read(rule["expr"], exported)
        used |= names
        problems += [f"{rule['alert']}: {problem}" for problem in found]
    return used, problems


def test_the_dashboard_reads_only_metrics_labels_and_values_the_gateway_exports(exported):
    used, problems = dashboard_problems(exported)
    assert problems == []
    assert len(used) >= 10


def test_the_alert_rules_read_only_metrics_labels_and_values_the_gateway_exports(exported):
    used, problems = alert_problems(exported)
    assert problems == []
    assert {"axonflow_provider_health", "axonflow_attempts_total", "axonflow_overhead_seconds_bucket"} <= used


def test_every_family_the_gateway_exports_is_drawn_on_the_dashboard(exported):
    used, _ = dashboard_problems(exported)
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported.labels}
    drawn = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families - drawn == set(), "a new metric: give it a panel in docs/grafana/axonflow.json"


def test_the_dashboard_has_every_section_and_its_key_metrics(exported):
    dashboard = load_dashboard()
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Traffic", "Errors", "Latency & overhead", "Health", "Spend", "Internals"]
    used, _ = dashboard_problems(exported)
    assert {
        "axonflow_requests_total",
        "axonflow_attempts_total",
        "axonflow_failovers_total",
        "axonflow_request_duration_seconds_bucket",
        "axonflow_overhead_seconds_bucket",
        "axonflow_provider_health",
        "axonflow_provider_circuit",
        "axonflow_cost_usd_total",
        "axonflow_in_flight_requests",
        "axonflow_usage_queue_depth",
    } <= used
    kinds = {panel["type"] for panel in panels(dashboard)}
    assert {"row", "timeseries", "stat", "state-timeline"} == kinds


def test_the_dashboard_imports_as_is():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "axonflow" and dashboard["title"] == "AxonFlow"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    everything = list(panels(dashboard))
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids)) and all(isinstance(each, int) for each in ids)
    for panel in everything:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert "targets" not in panel
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and all(refs) and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_the_dashboard_picks_its_data_source_tenants_and_providers():
    found = variables(load_dashboard())
    assert found["datasource"]["type"] == "datasource" and found["datasource"]["query"] == "prometheus"
    assert variable_query(found["tenant"]) == "label_values(axonflow_requests_total, tenant)"
    assert variable_query(found["provider"]) == 'label_values(axonflow_requests_total{tenant=~"$tenant"}, provider)'
    for name in ("tenant", "provider"):
        assert found[name]["includeAll"] and found[name]["multi"], name
        assert found[name]["allValue"] == ".*", name  # also matches the empty tenant label
        assert found[name]["datasource"]["uid"] == "${datasource}", name


def test_every_panel_filters_by_the_chosen_tenants_and_providers_where_the_metric_has_them(exported):
    unfiltered = []
    for panel in panels(load_dashboard()):
        for target in panel.get("targets", []):
            for name, matchers in selectors(target["expr"]):
                given = {(label, op, value) for label, op, value in matchers or []}
                for label in ("tenant", "provider"):
                    if label in exported.labels.get(name, ()) and (label, "=~", f"${label}") not in given:
                        unfiltered.append(f"{panel['title']} {target['refId']}: {name} without {label}")
    assert unfiltered == []


def test_every_alert_rule_says_how_long_how_bad_and_what():
    rules = load_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {
        "AxonFlowProviderUnhealthy",
        "AxonFlowProviderCircuitOpen",
        "AxonFlowHighErrorRatio",
        "AxonFlowUpstreamFailureRatio",
        "AxonFlowOverheadP99High",
        "AxonFlowUsageWriteFailures",
        "AxonFlowUsageQueueBacklog",
    } <= set(names)
    for rule in rules:
        assert re.fullmatch(r"AxonFlow[A-Z]\w+", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert DURATION.fullmatch(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]


@pytest.mark.parametrize(
    "expr, reported",
    [
        ("sum(rate(axonflow_made_up_total[5m]))", "axonflow_made_up_total is not exported"),
        ("sum by (instance) (up)", "up is not exported"),
        ('axonflow_requests_total{tenant="acme"} / node_load1', "node_load1 is not exported"),
        ('sum(rate(axonflow_overhead_seconds_count{provider=~"$provider"}[5m]))', "has no label 'provider'"),
        ("sum by (provider) (rate(axonflow_overhead_seconds_bucket[5m]))", "has the label 'provider'"),
        ('axonflow_provider_health{status="down"} == 1', "is never 'down'"),
        ('axonflow_provider_circuit{state=~"open|halfopen"}', "is never 'halfopen'"),
        ('rate(axonflow_attempts_total{outcome="failed"}[5m])', "is never 'failed'"),
        ("rates(axonflow_requests_total[5m])", "unknown function rates()"),
        ("sum(rate(axonflow_requests_total[5m])", "unbalanced brackets"),
        ('{__name__="axonflow_requests_total"}', "without a metric name"),
    ],
)
def test_the_checker_reports_what_the_gateway_does_not_export(exported, expr, reported):
    _, problems = read(expr, exported)
    assert any(reported in problem for problem in problems), problems


def test_the_checker_passes_what_the_gateway_exports(exported):
    names, problems = read(
        'sum by (tenant, provider) (rate(axonflow_attempts_total{outcome=~"success|failure", error_class!="none"}'
        "[5m] offset 1h)) / on (tenant, provider) group_left max by (tenant, provider, instance) "
        '(axonflow_provider_circuit{state="open"} == bool 1) or vector(0) > 1e-3',
        exported,
    )
    assert problems == []
    assert names == {"axonflow_attempts_total", "axonflow_provider_circuit"}
    assert read_variable("label_values(axonflow_requests_total, made_up_label)", exported)[1]


def test_the_dashboard_and_the_rules_fail_when_a_metric_they_read_is_no_longer_exported(exported):
    """Each metric the dashboard or the rules read, removed from what the gateway exports,
    is reported: the tests above can fail."""
    dashboard_used, _ = dashboard_problems(exported)
    rules_used, _ = alert_problems(exported)
    for name in dashboard_used:
        _, problems = dashboard_problems(exported.without(name))
        assert any(f"{name} is not exported" in problem for problem in problems), name
    for name in rules_used:
        _, problems = alert_problems(exported.without(name))
        assert any(f"{name} is not exported" in problem for problem in problems), name
