"""Soak: 200 concurrent clients for 60 s against /v1/chat/completions (`model: auto`,
three OpenAI-type providers on the fake upstream) while about 10 % of upstream calls
fail at random: two providers fail 15 % of their calls each (with their own rotating
fault kinds, connection resets included), the third is healthy. Reports the success rate, latency
(p50/p99, and what the gateway adds over the upstream at the same concurrency,
measured right after), and the gateway's memory at the start, during and at the end.

    .venv/bin/python -m bench.soak                    # = make soak
    .venv/bin/python -m bench.soak --seconds 20 --connections 100

Same processes and pinning as bench/run.py (the gateway alone on one CPU).
Results: bench/results/soak.json and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import run  # noqa: E402

# Mixed faults that fail fast or slow, on the first byte or mid-body.
FAULTS = {"p0": ["500", "503", "reset"], "p1": ["502", "malformed", "missing_fields"]}
if os.environ.get("SOAK_FAULTS"):
    FAULTS = json.loads(os.environ["SOAK_FAULTS"])


def configure(stack: run.Stack, label: str, **behaviour) -> None:
    data = json.dumps(behaviour).encode()
    request = urllib.request.Request(f"{stack.upstream_url}/_control/{label}", data=data, method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def stats(stack: run.Stack) -> dict:
    with urllib.request.urlopen(f"{stack.upstream_url}/_control/stats", timeout=5) as response:
        return json.loads(response.read())


def rotate_faults(stack: run.Stack, rate: float, stop: threading.Event) -> None:
    """The fake takes one fault kind per label: switch each label's kind every second."""
    turn = 0
    while not stop.is_set():
        for label, kinds in FAULTS.items():
            configure(stack, label, failure_rate=rate, failure_kind=kinds[turn % len(kinds)])
        turn += 1
        stop.wait(1.0)


def sample_memory(stack: run.Stack, samples: list, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(5.0):
        samples.append((round(time.monotonic() - started), round(stack.rss_kb()[0] / 1024, 1)))


def hold_breaker_closed(env: dict) -> None:
    """Trip circuits only when every recent attempt failed, so every injected fault
    reaches the failover loop instead of the breaker taking a flaky provider out."""
    code = "from tenants.models import Tenant; Tenant.objects.filter(slug='bench').update(" \
        "health_settings={'traffic_error_rate': 1.0})"
    subprocess.run([run.PY, "manage.py", "shell", "-c", code], cwd=run.ROOT, env=env, check=True)


def soak(seconds: float, connections: int, rate: float, hold_breaker: bool = False) -> dict:
    env = run.bench_env(None)
    with run.Stack(env, providers=3) as stack:
        if hold_breaker:
            hold_breaker_closed(env)
        run.warm_up(stack)
        baseline_direct = run.wrk(stack, "direct", connections, 5)  # opens the connections
        run.wrk(stack, "v1_auto", connections, 5)
        rss_start = stack.rss_kb()[0] / 1024
        stop = threading.Event()
        samples: list = [(0, round(rss_start, 1))]
        before = stats(stack)
        threads = [
            threading.Thread(target=rotate_faults, args=(stack, rate, stop), daemon=True),
            threading.Thread(target=sample_memory, args=(stack, samples, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        result = run.wrk(stack, "v1_auto", connections, seconds)
        stop.set()
        for thread in threads:
            thread.join(10)
        after = stats(stack)
        for label in FAULTS:
            configure(stack, label, failure_rate=0)
        rss_end, rss_peak = (kb / 1024 for kb in stack.rss_kb())
        direct = run.wrk(stack, "direct", connections, 10)
    labels = [k for k in after if k.startswith("p")]
    upstream_calls = sum(after[k].get("total", 0) - before.get(k, {}).get("total", 0) for k in labels)
    upstream_failed = sum(after[k].get("failed", 0) - before.get(k, {}).get("failed", 0) for k in labels)
    failed = result["errors"] + result["non2xx"]
    return {
        "breaker": "held closed" if hold_breaker else "defaults",
        "seconds": seconds,
        "connections": connections,
        "requests": result["requests"],
        "rps": round(result["rps"]),
        "failed": failed,
        "success_rate": 1 - failed / max(result["requests"], 1),
        "upstream_calls": upstream_calls,
        "upstream_failed": upstream_failed,
        "upstream_failure_share": upstream_failed / max(upstream_calls, 1),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "direct_p50_ms": direct["p50_us"] / 1000,
        "direct_p99_ms": direct["p99_us"] / 1000,
        "direct_warm_rps": round(baseline_direct["rps"]),
        "added_p99_ms": (result["p99_us"] - direct["p99_us"]) / 1000,
        "cpu_us_per_request": round(result["gateway_cpu_us_per_request"]),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "rss_growth": rss_end / rss_start - 1,
        "rss_samples": samples,
    }


def markdown(r: dict) -> str:
    return "\n".join(
        [
            f"| figure | value (circuit breaker: {r['breaker']}) |",
            "|---|---|",
            f"| requests ({r['connections']} clients, {r['seconds']:g} s) | {r['requests']:,} ({r['rps']:,} req/s) |",
            f"| upstream calls failed (injected) | {r['upstream_failed']:,} of {r['upstream_calls']:,} "
            f"({r['upstream_failure_share']:.1%}) |",
            f"| requests failed | {r['failed']:,} |",
            f"| **success rate** | **{r['success_rate']:.4%}** |",
            f"| p50 / p99 latency | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms |",
            f"| direct to the upstream, same concurrency, p50 / p99 | {r['direct_p50_ms']:.1f} / {r['direct_p99_ms']:.1f} ms |",
            f"| p99 added | {r['added_p99_ms']:.1f} ms |",
            f"| gateway CPU per request | {r['cpu_us_per_request']} µs |",
            f"| RSS start → end (peak) | {r['rss_start_mb']} → {r['rss_end_mb']} MB ({r['rss_peak_mb']} MB) |",
            f"| **memory growth** | **{r['rss_growth']:+.1%}** |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--failure-rate", type=float, default=0.15, help="of each failing provider's calls")
    parser.add_argument("--hold-breaker", action="store_true", help="keep circuits closed: every fault meets failover")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    result = soak(args.seconds, args.connections, args.failure_rate, args.hold_breaker)
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    name = "soak-held.json" if args.hold_breaker else "soak.json"
    (run.RESULTS / name).write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
