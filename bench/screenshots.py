"""`make screenshots`: PNGs of the console for docs/screenshots/, taken in headless
Chromium (Debian's package, driven by Playwright) against the demo: a fresh SQLite
database, `load_demo`, the fake upstream and the server with its health loop, some
traffic through /v1 (one provider failing now and then), a drained provider.

    .venv/bin/python bench/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port, wait_port  # noqa: E402

PY = sys.executable
CHROMIUM = os.environ.get("AXONFLOW_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 820}


def env_for(workdir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="axonflow_site.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(40),
        AXONFLOW_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"sqlite:///{workdir / 'screens.sqlite3'}",
        AXONFLOW_ALLOW_PRIVATE_BASE_URLS="true",
        AXONFLOW_HEALTH_IN_PROCESS="true",
        AXONFLOW_HEALTH_INTERVAL_SECONDS="2",
        LOG_LEVEL="WARNING",
        # Plain http on 127.0.0.1, no TLS proxy in front.
        SECURE_SSL_REDIRECT="false", SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false",
    )
    return env


def post(url: str, body: dict, token: str | None = None, method: str = "POST") -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


def traffic(gateway: str, upstream: str, token: str) -> None:
    """Some requests, a few failing over, and a drained provider, so every page has content."""
    for i in range(24):
        if i == 8:  # the ollama demo answers 500 for a while: failovers, errors on the board
            post(f"{upstream}/_control/demo-ollama", {"failure_rate": 1.0, "failure_kind": "500"})
        if i == 16:
            post(f"{upstream}/_control/demo-ollama", {"failure_rate": 0.0})
        if i % 3 == 0:  # the REST API takes routing options: ask for ollama first
            body = {"prompt": f"Say hello #{i}", "preferred_provider": "ollama-demo"}
            post(f"{gateway}/api/v1/completions", body, token)
        else:
            body = {"model": "auto", "messages": [{"role": "user", "content": f"Say hello #{i}"}]}
            post(f"{gateway}/v1/chat/completions", body, token)
    post(
        f"{gateway}/api/v1/providers/anthropic-demo/state/",
        {"state": "drained", "reason": "Rotating the Anthropic key"},
        token,
    )
    time.sleep(2.5)  # the usage writer flushes every second; probes run every 2 s


def failover_of(gateway: str, token: str) -> int:
    """A request that failed over (the trace worth showing), else the newest."""
    request = urllib.request.Request(f"{gateway}/api/v1/usage/?limit=100", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        records = json.loads(response.read())["results"]
    return next((r["id"] for r in records if r["attempt_count"] > 1), records[0]["id"])


def shoot(gateway: str, out: Path, failover_id: int) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)

        def snap(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        page.goto(f"{gateway}/login/")
        snap("login")
        page.fill("input[name=username]", "demo")
        page.fill("input[name=password]", "demo-password")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        snap("providers")
        page.goto(f"{gateway}/providers/openai-demo/edit/")
        snap("provider-edit")
        page.goto(f"{gateway}/status/")
        page.wait_for_selector("#board-connection.live")
        page.wait_for_timeout(500)
        snap("board")
        page.goto(f"{gateway}/requests/")
        snap("requests")
        page.goto(f"{gateway}/requests/{failover_id}/")
        snap("request-trace")
        page.goto(f"{gateway}/tokens/")
        snap("tokens")
        page.goto(f"{gateway}/routes/")
        snap("model-routes")
        page.goto(f"{gateway}/audit/")
        snap("audit")
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = env_for(Path(tmp))
        upstream_port, gateway_port = free_port(), free_port()
        upstream, gateway = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{gateway_port}"
        try:
            subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
            demo = subprocess.run(
                [PY, "manage.py", "load_demo", "--upstream", upstream, "--allow-production"], cwd=ROOT, env=env, check=True,
                capture_output=True, text=True,
            )  # fmt: skip
            token = demo.stdout.split("Demo API token (shown once): ")[1].split()[0]
            procs.append(subprocess.Popen([PY, "manage.py", "fake_upstream", "--port", str(upstream_port)], cwd=ROOT, env=env))
            wait_port(upstream_port, procs[-1])
            procs.append(
                subprocess.Popen(
                    [PY, "manage.py", "serve", "--port", str(gateway_port), "--no-upstream"], cwd=ROOT, env=env
                )
            )
            wait_port(gateway_port, procs[-1])
            time.sleep(2.5)  # the first probes
            traffic(gateway, upstream, token)
            for path in shoot(gateway, out, failover_of(gateway, token)):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
