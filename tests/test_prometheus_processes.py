"""Metrics with several server processes (issue 13, Must-show 2): two uvicorn
processes sharing PROMETHEUS_MULTIPROC_DIR (as the workers of one instance do) and one
database; whichever is scraped, the totals are the sum of both processes' requests,
and they stay when a process exits.
"""

from __future__ import annotations

import signal
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_stack import UVICORN

TOKEN = "two-process-metrics-token-42"


def scrape(url: str) -> dict[str, float]:
    """{sample name: value summed over its series}."""
    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def settled(url: str, requests: int, timeout: float = 15.0) -> dict[str, float]:
    """The scrape once the usage writers have counted `requests` (they count each request
    as they take it off their queue, every AXONFLOW_USAGE_FLUSH_SECONDS)."""
    deadline = time.monotonic() + timeout
    while True:
        sums = scrape(url)
        if sums.get("axonflow_requests_total", 0) >= requests or time.monotonic() > deadline:
            return sums
        time.sleep(0.1)


def test_either_process_reports_the_sum_of_both(stack, start_server, tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "AXONFLOW_METRICS_TOKEN": TOKEN,
           "AXONFLOW_USAGE_FLUSH_SECONDS": "0.1"}  # fmt: skip
    first = start_server("metrics-a", UVICORN, **env)
    second = start_server("metrics-b", UVICORN, database=first.database, **env)
    body = {"model": "p0", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"Authorization": f"Bearer {stack.token}"}
    for server, count in ((first, 7), (second, 5)):
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            assert [client.post("/v1/chat/completions", json=body).status_code for _ in range(count)] == [200] * count

    via_first, via_second = settled(first.url, 12), settled(second.url, 12)
    for sums in (via_first, via_second):
        assert sums["axonflow_requests_total"] == 12
        assert sums["axonflow_attempts_total"] == 12
        assert sums["axonflow_request_duration_seconds_count"] == 12
        assert sums["axonflow_upstream_duration_seconds_count"] == 12
        assert sums["axonflow_tokens_total"] > 0
    assert len(list(shared.glob("counter_*.db"))) == 2  # one file per process: nothing shared by luck
    assert via_first["axonflow_tokens_total"] == via_second["axonflow_tokens_total"]

    # A process that exits keeps its counts in the sum (its live gauges leave it).
    second.process.send_signal(signal.SIGTERM)
    second.process.wait(30)  # uvicorn re-raises SIGTERM once its shutdown has run
    assert "Application shutdown complete" in second.output()
    assert settled(first.url, 12)["axonflow_requests_total"] == 12
    assert not list(shared.glob(f"gauge_livesum_{second.process.pid}.db"))
