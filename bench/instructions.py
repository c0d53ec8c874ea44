"""Instructions per request: the gateway run under valgrind (cachegrind, no cache
simulation), which counts every instruction the process executes, in every thread.
Wall-clock throughput on a shared 2-core machine swings by ±25 % between windows;
instruction counts do not, so this is how two trees are compared within a few percent.

Each target is measured twice, with N1 and N2 requests after the same warm-up, each in
a fresh gateway; (I(N2) - I(N1)) / (N2 - N1) cancels start-up and shutdown and leaves
the steady-state cost of one request (usage writer thread included: shutdown flushes it).

    .venv/bin/python -m bench.instructions                     # v1, v1_auto, api
    .venv/bin/python -m bench.instructions --targets v1 --n1 300 --n2 1500

Run it from the tree to measure (`git worktree add /tmp/old <commit>`, copy this file
into its bench/, run it there with this venv's python). Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import run  # noqa: E402

_wait_port = run.wait_port


async def _send(url: str, body: dict, auth: str, count: int, concurrency: int = 10) -> int:
    payload = json.dumps(body).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    failures = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker(n: int) -> None:
            nonlocal failures
            for _ in range(n):
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    failures += r.status != 200

        share = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(n) for n in share))
    return failures


def instructions(target: str, count: int, warm: int, threads: bool = False) -> int | list[int]:
    """Instructions the gateway executed from start to exit, serving `warm` + `count`
    requests; with `threads`, one total per thread (callgrind), largest first."""
    out = Path(tempfile.mkdtemp()) / "grind.out"
    original = run.Stack._spawn

    def spawn(self, cmd, env=None):
        if "uvicorn" in cmd:
            tool = (
                ["--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}"]
                if threads
                else ["--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
            )
            cmd = ["valgrind", *tool, *cmd]
        return original(self, cmd, env)

    run.Stack._spawn = spawn
    run.wait_port = lambda port, proc, timeout=30: _wait_port(port, proc, 600)
    env = run.bench_env(None)
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts in every run
    try:
        with run.Stack(env, pin=False) as stack:
            url, body, auth = stack.targets()[target]
            failures = asyncio.run(_send(url, body, auth, warm)) + asyncio.run(_send(url, body, auth, count))
            if failures:
                raise RuntimeError(f"{failures} requests failed")
            stack.gateway.send_signal(signal.SIGTERM)  # graceful: the usage writer flushes
            stack.gateway.wait(600)
    finally:
        run.Stack._spawn = original
    if threads:
        totals = sorted(
            (int(re.search(r"^(?:summary|totals): (\d+)", f.read_text(), re.M).group(1)) for f in out.parent.iterdir()),
            reverse=True,
        )
        shutil.rmtree(out.parent)
        return totals
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    shutil.rmtree(out.parent)
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="v1,v1_auto,api")
    parser.add_argument("--n1", type=int, default=300)
    parser.add_argument("--n2", type=int, default=1500)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--threads", action="store_true", help="per thread (callgrind; slower)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed: apt-get install valgrind")
    os.chdir(run.ROOT)
    for target in args.targets.split(","):
        low = instructions(target, args.n1, args.warm, args.threads)
        high = instructions(target, args.n2, args.warm, args.threads)
        if args.threads:  # the threads are matched by size: the loop's first, then the writer's…
            per = [round((h - lo) / (args.n2 - args.n1)) for h, lo in zip(high, low)]
            print(json.dumps({"target": target, "per_thread_per_request": per}))
            continue
        per = (high - low) / (args.n2 - args.n1)
        print(json.dumps({"target": target, "n1": args.n1, "n2": args.n2, "instructions_per_request": round(per)}))


if __name__ == "__main__":
    main()
