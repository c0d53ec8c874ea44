"""AxonFlow gateway benchmark against the fake upstream, all on 127.0.0.1.

Processes: the fake upstream (`manage.py fake_upstream`), the gateway (uvicorn, one
process, uvloop + httptools, lifespan on) and the load generators: `wrk` for fixed-
concurrency runs and this script's aiohttp client for the burst and streaming points.
Every gateway figure is taken in the same run as the direct-to-upstream figure it is
compared with, in alternating rounds, and the median of the rounds is reported.

    .venv/bin/python bench/run.py                 # everything (about 6 minutes)
    .venv/bin/python bench/run.py --quick         # shorter windows, fewer rounds
    .venv/bin/python bench/run.py --only throughput,ttfb
    .venv/bin/python bench/run.py --database-url postgres://axonflow@127.0.0.1:5432/axonflow

Needs `wrk` (apt-get install wrk). Results: bench/results/latest.json and a markdown
table on stdout (docs/benchmarks.md explains them).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("throughput", "latency", "burst", "ttfb", "memory", "metrics", "budget")
CHAT_BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
DIRECT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def _tool(name: str, description: str, properties: dict) -> dict:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


# An agent's typical request: three tools; the fake answers with a tool call.
TOOLS_BODY = {
    "model": "p0",
    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    "tools": [
        _tool("get_weather", "Current weather in a city", {"city": {"type": "string"}}),
        _tool("search_docs", "Search the knowledge base", {"query": {"type": "string"}, "limit": {"type": "integer"}}),
        _tool("create_ticket", "Open a support ticket", {"title": {"type": "string"}, "urgent": {"type": "boolean"}}),
    ],
}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%%d,"duration_us":%%d,"errors":%%d,"non2xx":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def bench_env(database_url: str | None) -> dict[str, str]:
    from cryptography.fernet import Fernet

    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="axonflow_site.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        AXONFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        SECURE_SSL_REDIRECT="false",  # plain http on 127.0.0.1, no TLS proxy in front
        AXONFLOW_ALLOW_PRIVATE_BASE_URLS="true",  # the fake upstream listens on 127.0.0.1
        # The probe loop would add its own traffic to the fake; benchmarks measure requests only.
        AXONFLOW_HEALTH_IN_PROCESS="false",
        DATABASE_URL=database_url or f"sqlite:///{ROOT / 'var' / 'bench' / 'bench.sqlite3'}",
    )
    env.pop("REDIS_URL", None) if not os.environ.get("BENCH_REDIS_URL") else env.update(
        REDIS_URL=os.environ["BENCH_REDIS_URL"]
    )
    return env


class Stack:
    """The fake upstream and the gateway as child processes."""

    def __init__(self, env: dict[str, str], providers: int = 2, pin: bool = True):
        self.env = env
        # With two or more CPUs: the gateway alone on the last one, the fake upstream and
        # the load generators on the others, so the gateway's figures are its own.
        cpus = sorted(os.sched_getaffinity(0))
        self.gateway_cpus = {cpus[-1]} if pin and len(cpus) > 1 else set(cpus)
        self.other_cpus = set(cpus[:-1]) if pin and len(cpus) > 1 else set(cpus)
        self.procs: list[subprocess.Popen] = []
        self.upstream_port, self.gateway_port = free_port(), free_port()
        self.providers = providers

    def __enter__(self) -> Stack:
        if not self.env["DATABASE_URL"].startswith("postgres"):
            Path(self.env["DATABASE_URL"].removeprefix("sqlite:///")).unlink(missing_ok=True)  # same start every run
        subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        os.sched_setaffinity(0, self.other_cpus)  # this process (aiohttp client) and its children
        upstream = self._spawn(
            [PY, "manage.py", "fake_upstream", "--port", str(self.upstream_port), "--backlog", "4096"]
        )
        wait_port(self.upstream_port, upstream)
        seeded = subprocess.run(
            [PY, "bench/seed.py", self.upstream_url, str(self.providers)], cwd=ROOT, env=self.env, check=True,
            capture_output=True, text=True,
        )  # fmt: skip
        self.token = seeded.stdout.strip().splitlines()[-1]
        self.gateway = self.start_gateway(self.gateway_port)
        self.extra: dict[str, tuple[subprocess.Popen, int]] = {}  # target -> another gateway (add_gateway)
        self.budget_token = ""  # a token with a budget of its own (the budget scenario)
        return self

    def start_gateway(self, port: int, **env: str) -> subprocess.Popen:
        gateway = self._spawn(
            [
                PY, "-m", "uvicorn", "axonflow_site.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning", "--lifespan", "on", "--backlog", "4096",
            ],
            env,
        )  # fmt: skip
        os.sched_setaffinity(gateway.pid, self.gateway_cpus)
        wait_port(port, gateway)
        return gateway

    def add_gateway(self, target: str, **env: str) -> None:
        """A second gateway process, on the same CPU, database and upstream, with `env`
        changed: the `target` of `/v1/chat/completions` through it (compared with "v1")."""
        port = free_port()
        self.extra[target] = (self.start_gateway(port, **env), port)

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})})
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def set_latency(self, ms: float) -> None:
        data = json.dumps({"latency_ms": ms}).encode()
        req = urllib.request.Request(f"{self.upstream_url}/_control/*", data=data, method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def cpu_seconds(self, target: str = "") -> float:
        pid = self.extra[target][0].pid if target in self.extra else self.gateway.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> tuple[int, int]:
        """(current, peak) resident set of the gateway, in KiB."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.gateway.pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])

    # --- targets ------------------------------------------------------------------------

    def targets(self) -> dict[str, tuple[str, dict, str]]:
        """name -> (url, body, Authorization)"""
        extra = {
            target: (f"http://127.0.0.1:{port}/v1/chat/completions", {**CHAT_BODY, "model": "p0"}, f"Bearer {self.token}")
            for target, (_, port) in self.extra.items()
        }
        if self.budget_token:
            extra["v1_budget"] = (
                f"{self.gateway_url}/v1/chat/completions", {**CHAT_BODY, "model": "p0"}, f"Bearer {self.budget_token}"
            )
        return extra | {
            "direct": (f"{self.upstream_url}/p0/v1/chat/completions", DIRECT_BODY, "Bearer sk-bench-p0-0123456789"),
            "v1": (f"{self.gateway_url}/v1/chat/completions", {**CHAT_BODY, "model": "p0"}, f"Bearer {self.token}"),
            "v1_auto": (f"{self.gateway_url}/v1/chat/completions", CHAT_BODY, f"Bearer {self.token}"),
            "v1_tools": (f"{self.gateway_url}/v1/chat/completions", TOOLS_BODY, f"Bearer {self.token}"),
            "api": (
                f"{self.gateway_url}/api/v1/completions",
                {"prompt": "hello", "preferred_provider": "p0"},
                f"Bearer {self.token}",
            ),
        }


def wrk(stack: Stack, target: str, connections: int, seconds: float) -> dict:
    url, body, auth = stack.targets()[target]
    script = WRK_SCRIPT % {"body": json.dumps(json.dumps(body)), "auth": json.dumps(auth)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    threads = 1 if connections < 50 else 2
    cpu0 = stack.cpu_seconds(target)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    out = subprocess.run([*command, "-s", f.name, url], capture_output=True, text=True, check=True).stdout
    cpu = stack.cpu_seconds(target) - cpu0
    os.unlink(f.name)
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["gateway_cpu_us_per_request"] = cpu / max(result["requests"], 1) * 1e6 if target != "direct" else None
    return result


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def compare(stack: Stack, targets: list[str], connections: int, seconds: float, rounds: int) -> dict:
    """Alternate the targets for `rounds` rounds; medians of each figure per target."""
    runs: dict[str, list[dict]] = {t: [] for t in targets}
    for target in targets:  # open the connections (client side and gateway pool) first
        wrk(stack, target, connections, 1)
    for _ in range(rounds):
        for target in targets:
            runs[target].append(wrk(stack, target, connections, seconds))
    summary = {}
    for target, results in runs.items():
        summary[target] = {
            "rps": round(median_of(results, "rps")),
            "p50_ms": median_of(results, "p50_us") / 1000,
            "p99_ms": median_of(results, "p99_us") / 1000,
            "errors": sum(r["errors"] + r["non2xx"] for r in results),
            "cpu_us_per_request": round(statistics.median(r["gateway_cpu_us_per_request"] for r in results))
            if target != "direct" else None,
        }  # fmt: skip
        if target != "direct" and "direct" in summary:
            summary[target]["added_p50_ms"] = summary[target]["p50_ms"] - summary["direct"]["p50_ms"]
            summary[target]["added_p99_ms"] = summary[target]["p99_ms"] - summary["direct"]["p99_ms"]
    return summary


def warm_up(stack: Stack) -> None:
    for target in ("v1", "api", "v1_auto"):
        wrk(stack, target, 10, 2)


# --- scenarios -------------------------------------------------------------------------------


def throughput(stack: Stack, args) -> dict:
    stack.set_latency(0)
    return compare(stack, ["direct", "v1", "api", "v1_auto", "v1_tools"], 10, args.duration, args.rounds)


def latency(stack: Stack, args) -> dict:
    out = {}
    for upstream_ms in (0, 200):
        stack.set_latency(upstream_ms)
        for connections in (1, 50, 200):
            out[f"{upstream_ms}ms_c{connections}"] = compare(
                stack, ["direct", "v1"], connections, args.duration, args.rounds
            )
    stack.set_latency(0)
    return out


def burst(stack: Stack, args) -> dict:
    from bench.client import burst as fire

    stack.set_latency(1000)
    out = {}
    for target in ("direct", "v1", "api"):
        url, body, auth = stack.targets()[target]
        # The first burst also opens ~500 new upstream connections (the pool holds the
        # warm-up's few); later ones find them open.
        runs = [fire(url, body, auth, 500) for _ in range(max(2, args.rounds))]
        out[target] = {
            "first_wall_s": runs[0]["wall_s"],
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "max_wall_s": max(r["wall_s"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }
    stack.set_latency(0)
    return out


def ttfb(stack: Stack, args) -> dict:
    from bench.client import time_to_first_byte

    stack.set_latency(0)
    out: dict[str, list] = {"direct": [], "v1": [], "api": []}
    for _ in range(args.rounds):
        for target in out:
            url, body, auth = stack.targets()[target]
            out[target].append(time_to_first_byte(url, {**body, "stream": True}, auth, args.ttfb_requests))
    summary = {
        t: {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        }
        for t, runs in out.items()
    }
    for t in ("v1", "api"):
        summary[t]["added_p50_ms"] = summary[t]["p50_ms"] - summary["direct"]["p50_ms"]
    return summary


def metrics(stack: Stack, args) -> dict:
    """/v1/chat/completions with the Prometheus metrics on and off (AXONFLOW_METRICS=false):
    two fresh gateway processes alike but for that (the stack's own has served the
    other scenarios: its pools and threads differ), interleaved, at least three rounds."""
    stack.set_latency(0)
    stack.add_gateway("v1_metrics_on", AXONFLOW_METRICS="true")
    stack.add_gateway("v1_metrics_off", AXONFLOW_METRICS="false")
    targets = ["v1_metrics_on", "v1_metrics_off"]
    for target in targets:
        wrk(stack, target, 10, 2)  # warm-up, as the stack's own gateway had
    summary = compare(stack, targets, 10, args.duration, max(3, args.rounds))
    summary["on_over_off"] = round(summary["v1_metrics_on"]["rps"] / summary["v1_metrics_off"]["rps"], 3)
    summary["cpu_on_over_off"] = round(
        summary["v1_metrics_on"]["cpu_us_per_request"] / summary["v1_metrics_off"]["cpu_us_per_request"], 3
    )
    return summary


def budget(stack: Stack, args) -> dict:
    """/v1/chat/completions through the same gateway with a token that has a budget of
    its own (far from its limit: every request reserves and settles) and with the plain
    token, interleaved. The budget book is Redis when BENCH_REDIS_URL is set."""
    stack.set_latency(0)
    admin = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{stack.gateway_url}{path}", json.dumps(body).encode(), admin, method=method)
        try:
            return json.loads(urllib.request.urlopen(request, timeout=10).read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    token = call("POST", "/api/v1/tokens/", {"name": "bench-budget", "scope": "completions"})
    call("PUT", "/api/v1/budgets/", {"budgets": [{"name": "bench", "token_id": token["id"], "limit_usd": "999999"}]})
    stack.budget_token = token["token"]
    targets = ["v1", "v1_budget"]
    for target in targets:
        wrk(stack, target, 10, 2)
    summary = compare(stack, targets, 10, args.duration, max(3, args.rounds))
    summary["book"] = "redis" if stack.env.get("REDIS_URL") else "in-process"
    summary["with_over_without"] = round(summary["v1_budget"]["rps"] / summary["v1"]["rps"], 3)
    summary["cpu_with_over_without"] = round(
        summary["v1_budget"]["cpu_us_per_request"] / summary["v1"]["cpu_us_per_request"], 3
    )
    return summary


def memory(stack: Stack, args) -> dict:
    current, peak = stack.rss_kb()
    return {"rss_mb": round(current / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="3 s windows, 1 round")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttfb-requests", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-pin", action="store_true", help="let the OS place every process on any CPU")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.ttfb_requests = 3.0, 1, 200
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    sys.path.insert(0, str(ROOT))
    wanted = [s for s in args.only.split(",") if s]
    # Other work on the machine shows up as lower req/s at the same CPU per request.
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_before": os.getloadavg()[0],
               "pinned": not args.no_pin}  # fmt: skip
    results: dict = {"machine": machine, "args": vars(args)}
    with Stack(bench_env(args.database_url), pin=not args.no_pin) as stack:
        warm_up(stack)
        for name in SCENARIOS:
            if name in wanted:
                print(f"== {name}", file=sys.stderr, flush=True)
                results[name] = globals()[name](stack, args)
                print(json.dumps(results[name], indent=1), file=sys.stderr, flush=True)
    machine["loadavg_after"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    from bench.report import markdown

    print(markdown(results))


if __name__ == "__main__":
    main()
