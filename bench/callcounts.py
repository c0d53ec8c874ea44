"""Python function calls per request on the gateway's event loop, for comparing two
trees: the gateway runs under cProfile for N requests after a warm-up, and the calls
of each function are divided by N. Call counts are deterministic where wall-clock
figures on a shared machine are not; a function called more often per request, or a
new one, is where added work hides. (The usage writer thread is not profiled.)

    .venv/bin/python -m bench.callcounts --target v1 --requests 2000 > /tmp/head.json
    (in another tree) … > /tmp/old.json
    .venv/bin/python -m bench.callcounts --diff /tmp/old.json /tmp/head.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pstats
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import run  # noqa: E402
from bench.instructions import _send  # noqa: E402


def profile(target: str, requests: int, warm: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp()) / "gateway.prof"
    original = run.Stack._spawn

    def spawn(self, cmd):
        if "uvicorn" in cmd:
            at = cmd.index("-m")
            cmd = [*cmd[:at], "-m", "cProfile", "-o", str(out), *cmd[at:]]
        return original(self, cmd)

    run.Stack._spawn = spawn
    try:
        with run.Stack(run.bench_env(None), pin=False) as stack:
            url, body, auth = stack.targets()[target]
            asyncio.run(_send(url, body, auth, warm))
            baseline = asyncio.run(_send(url, body, auth, requests))
            if baseline:
                raise RuntimeError(f"{baseline} requests failed")
            stack.gateway.send_signal(signal.SIGINT)  # cProfile writes its file on a normal exit
            stack.gateway.wait(120)
    finally:
        run.Stack._spawn = original
    stats = pstats.Stats(str(out)).stats
    shutil.rmtree(out.parent)
    counts: dict[str, float] = {}
    for (path, line, name), (_cc, calls, _tt, _ct, _callers) in stats.items():
        key = f"{Path(path).name}:{name}" if path != "~" else name
        counts[key] = counts.get(key, 0) + calls / requests
    return counts


def diff(old: dict[str, float], new: dict[str, float], least: float = 0.5) -> None:
    rows = []
    for key in set(old) | set(new):
        delta = new.get(key, 0) - old.get(key, 0)
        if abs(delta) >= least:
            rows.append((delta, key, old.get(key, 0), new.get(key, 0)))
    for delta, key, before, after in sorted(rows, reverse=True):
        print(f"{delta:+8.2f}  {before:7.2f} -> {after:7.2f}  {key}")
    print(f"total calls per request: {sum(old.values()):.0f} -> {sum(new.values()):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="v1")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    if args.diff:
        diff(*(json.loads(Path(p).read_text()) for p in args.diff))
        return
    print(json.dumps(profile(args.target, args.requests, args.warm - args.warm % 10 or 10)))


if __name__ == "__main__":
    main()
