"""Seed the benchmark database: tenant `bench`, an admin token, and providers pointing at
the fake upstream. Run by bench/run.py with the benchmark's environment; prints the
raw token on stdout.

    python bench/seed.py http://127.0.0.1:PORT [providers]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axonflow_site.settings")

import django  # noqa: E402

django.setup()

from providers.models import ProviderConfig  # noqa: E402
from providers.validation import apply_provider_config  # noqa: E402
from tenants.models import ApiToken, Plan, Tenant, TokenScope  # noqa: E402
from tenants.rls import tenant_context  # noqa: E402


def seed(upstream: str, count: int) -> str:
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench", "plan": Plan.ENTERPRISE})
    with tenant_context(tenant.pk):
        ProviderConfig.objects.filter(tenant=tenant).delete()
        for i in range(count):
            name = f"p{i}"
            config = ProviderConfig(
                tenant=tenant, name=name, type="openai", model="gpt-4o-mini", base_url=f"{upstream}/{name}/v1",
                weight=50, timeout_seconds=30,
            )  # fmt: skip
            apply_provider_config(config, {"api_key": f"sk-bench-{name}-0123456789"})
            config.save()
    _token, raw = ApiToken.issue(tenant, "bench", TokenScope.ADMIN)
    return raw


if __name__ == "__main__":
    print(seed(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2))
