"""Render bench/results/latest.json as the markdown tables of docs/benchmarks.md.

.venv/bin/python -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {
    "direct": "fake upstream, direct",
    "v1": "/v1/chat/completions",
    "v1_auto": "/v1/chat/completions (model auto)",
    "v1_tools": "/v1/chat/completions (3 tools, tool-call answer)",
    "api": "/api/v1/completions",
    "v1_metrics_on": "/v1/chat/completions, metrics on",
    "v1_budget": "/v1/chat/completions, a budget active",
    "v1_metrics_off": "/v1/chat/completions, AXONFLOW_METRICS=false",
}
LATENCY_HEAD = (
    "| upstream | concurrency | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | gateway req/s |"
)


def _f(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    out = []
    if "throughput" in results:
        out += ["### Throughput, upstream 0 ms, concurrency 10", "",
                "| target | req/s | p50 ms | p99 ms | added p50 ms | gateway CPU µs/req | errors |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for target, r in results["throughput"].items():
            out.append(
                f"| {NAMES[target]} | {r['rps']:,} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | "
                f"{_f(r.get('added_p50_ms'))} | {r['cpu_us_per_request'] or '–'} | {r['errors']} |"
            )
        out.append("")
    if "latency" in results:
        out += ["### Added latency of /v1/chat/completions (gateway minus direct, same run)", "",
                LATENCY_HEAD, "|---|---|---|---|---|---|"]  # fmt: skip
        for key, r in results["latency"].items():
            upstream, conc = key.split("_c")
            d, g = r["direct"], r["v1"]
            pairs = [(d["p50_ms"], d["p99_ms"]), (g["p50_ms"], g["p99_ms"]), (g["added_p50_ms"], g["added_p99_ms"])]
            cells = " | ".join(f"{_f(a)} / {_f(b)}" for a, b in pairs)
            out.append(f"| {upstream} | {conc} | {cells} | {g['rps']:,} |")
        out.append("")
    if "burst" in results:
        out += ["### 500 simultaneous requests, upstream 1 s", "",
                "| target | first burst s | median s | worst s | errors |", "|---|---|---|---|---|"]  # fmt: skip
        for target, r in results["burst"].items():
            walls = " | ".join(_f(r.get(k), 3) for k in ("first_wall_s", "wall_s", "max_wall_s"))
            out.append(f"| {NAMES[target]} | {walls} | {r['errors']} |")
        out.append("")
    if "ttfb" in results:
        out += ["### Streaming: time to first byte, sequential", "", "| target | p50 ms | p99 ms | added p50 ms |",
                "|---|---|---|---|"]  # fmt: skip
        for target, r in results["ttfb"].items():
            out.append(
                f"| {NAMES[target]} | {_f(r['p50_ms'], 3)} | {_f(r['p99_ms'], 3)} | {_f(r.get('added_p50_ms'), 3)} |"
            )
        out.append("")
    if "metrics" in results:
        r = results["metrics"]
        out += ["### Prometheus metrics on and off, /v1/chat/completions, interleaved", "",
                "| gateway | req/s | p50 ms | p99 ms | gateway CPU µs/req | errors |", "|---|---|---|---|---|---|"]  # fmt: skip
        for target in ("v1_metrics_on", "v1_metrics_off"):
            g = r[target]
            out.append(f"| {NAMES[target]} | {g['rps']:,} | {_f(g['p50_ms'])} | {_f(g['p99_ms'])} | "
                       f"{g['cpu_us_per_request']} | {g['errors']} |")  # fmt: skip
        out += ["", f"Metrics on / off: {r['on_over_off']:.1%} of the throughput, "
                    f"{r['cpu_on_over_off']:.1%} of the CPU per request.", ""]  # fmt: skip
    if "budget" in results:
        r = results["budget"]
        out += [f"### A budget active ({r['book']} book), /v1/chat/completions, interleaved", "",
                "| requests | req/s | p50 ms | p99 ms | gateway CPU µs/req | errors |", "|---|---|---|---|---|---|"]  # fmt: skip
        for target in ("v1", "v1_budget"):
            g = r[target]
            out.append(f"| {NAMES[target]} | {g['rps']:,} | {_f(g['p50_ms'])} | {_f(g['p99_ms'])} | "
                       f"{g['cpu_us_per_request']} | {g['errors']} |")  # fmt: skip
        out += ["", f"With a budget / without: {r['with_over_without']:.1%} of the throughput, "
                    f"{r['cpu_with_over_without']:.1%} of the CPU per request.", ""]  # fmt: skip
    if "memory" in results:
        m = results["memory"]
        out += [f"Gateway memory after the run: RSS {m['rss_mb']} MB, peak RSS {m['peak_rss_mb']} MB.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json")
    print(markdown(json.loads(path.read_text())))
