"""Profile the gateway under load with py-spy and say where the time goes.

    .venv/bin/python -m bench.profile v1      # or: api, v1_auto
    .venv/bin/python -m bench.profile v1 --raw bench/results/profile-v1.txt   # re-summarize

Samples only threads holding the GIL (`py-spy --gil`), i.e. the CPU the one Python
process spends, while wrk drives the target at concurrency 10 against a 0 ms upstream.
Each sample is charged to the innermost frame that belongs to a known component.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (component, path fragments), innermost match wins; order breaks ties within one frame.
# A stack containing one of these frames belongs to that background thread as a whole.
THREADS = [
    ("usage writer thread (INSERTs, buckets)", "UsageWriter._run"),
    ("health writer thread", "axonflow-health"),
]
COMPONENTS = [
    ("routing core (router, selection, cache, limiter, health)", (
        "routing/router.py", "routing/route.py", "routing/selection.py", "routing/cache.py", "routing/ratelimit.py",
        "routing/health/", "providers/pricing.py",
    )),
    ("usage entry on the request path", ("usage/entry.py", "usage/writer.py")),
    ("endpoint code: auth, parse, validate, render", ("routing/v1/app.py", "routing/v1/wire.py",
                                                    "axonflow_site/mount.py", "tenants/")),
    ("OpenAI adapter (to_wire, from_wire, Call)", ("providers/adapters/",)),
    ("aiohttp client (upstream request)", ("aiohttp/",)),
    ("DRF and adrf (serializer, request, views)", ("rest_framework/", "adrf/", "routing/api/")),
    ("Django request handling", ("django/",)),
    ("asgiref thread hand-offs", ("asgiref/", "concurrent/futures", "threading.py")),
    ("JSON", ("json/",)),
    ("uvicorn + uvloop (HTTP server, sockets, event loop)", ("uvicorn/", "asyncio/", "channels/")),
]  # fmt: skip


def component_of(frames: list[str]) -> str:
    for name, marker in THREADS:
        if any(marker in frame for frame in frames):
            return name
    for frame in reversed(frames):
        for name, fragments in COMPONENTS:
            if any(f in frame for f in fragments):
                return name
    return "other"


def summarize(raw: Path) -> str:
    totals: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        totals[component_of(stack.split(";"))] += int(count)
    whole = sum(totals.values())
    rows = ["| component | share of CPU |", "|---|---|"]
    rows += [f"| {name} | {100 * n / whole:.0f}% |" for name, n in totals.most_common()]
    return "\n".join(rows) + f"\n\n({whole} samples)"


def record(target: str, seconds: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from bench.run import Stack, bench_env, warm_up, wrk

    out = ROOT / "bench" / "results" / f"profile-{target}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with Stack(bench_env(None)) as stack:
        warm_up(stack)
        spy = subprocess.Popen(
            [py_spy, "record", "-p", str(stack.gateway.pid), "-d", str(seconds), "-r", "500", "--gil",
             "--nonblocking", "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = wrk(stack, target, 10, seconds)
        spy.wait()
    print(f"{target}: {result['rps']:.0f} req/s under the profiler", file=sys.stderr)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["v1", "v1_auto", "api"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--raw", type=Path, help="summarize an existing py-spy raw file")
    args = parser.parse_args()
    print(summarize(args.raw or record(args.target, args.seconds)))
