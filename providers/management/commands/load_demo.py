"""Idempotently create the demo tenant, its admin user, three providers pointed at
the built-in fake upstream (`manage.py fake_upstream`) and a model route `fast` over
the OpenAI and Anthropic ones, so `model="fast"` and `model="gpt-4o-mini"` work at once.

The demo user is a superuser with a published password, and the command prints an
admin API token: it runs only in DEBUG (as `make run` does) or when asked for with
--allow-production, never on a production deployment by accident."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from providers.models import ModelRoute, ModelRouteTarget, ProviderConfig
from providers.validation import apply_provider_config, validate_provider_config
from tenants.models import ApiToken, Membership, Plan, Role, Tenant, TokenScope
from tenants.rls import tenant_context

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_PROVIDERS = [
    # name, type, model, path under the fake upstream, priority, weight
    ("openai-demo", "openai", "gpt-4o-mini", "/demo-openai/v1", 0, 60),
    ("anthropic-demo", "anthropic", "claude-3-5-haiku-latest", "/demo-anthropic", 0, 40),
    ("ollama-demo", "ollama", "llama3.2", "/demo-ollama", -1, 50),
]
# The demo route: (provider, upstream model, weight); each target is sent its own model.
DEMO_ROUTE = "fast"
DEMO_ROUTE_TARGETS = [("openai-demo", "gpt-4o-mini", 70), ("anthropic-demo", "claude-3-5-haiku-latest", 30)]


class Command(BaseCommand):
    help = "Create (or refresh) the demo tenant with an admin user and providers on the fake upstream."

    def add_arguments(self, parser):
        parser.add_argument("--upstream", default="http://127.0.0.1:8100", help="fake upstream base URL")
        parser.add_argument(
            "--allow-production", action="store_true",
            help="create the demo superuser (published password) and an admin token even though DEBUG is off",
        )  # fmt: skip

    def handle(self, upstream, allow_production=False, **options):
        if not (settings.DEBUG or allow_production):
            raise CommandError(
                f"DEBUG is off: load_demo would create the superuser {DEMO_USER!r} with a published password "
                "and an admin API token. Pass --allow-production if this is really what you want."
            )
        tenant, _ = Tenant.objects.update_or_create(
            slug="demo", defaults={"name": "Demo Org", "plan": Plan.ENTERPRISE}
        )
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USER).first()
        if user is None:
            user = User.objects.create_superuser(DEMO_USER, "demo@example.com", DEMO_PASSWORD)
        Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": Role.ADMIN})
        with tenant_context(tenant.pk):
            for name, ptype, model, path, priority, weight in DEMO_PROVIDERS:
                self.ensure_provider(tenant, name, ptype, model, upstream.rstrip("/") + path, priority, weight)
            self.ensure_route(tenant)
        self.stdout.write(f"Demo tenant '{tenant.slug}' ready: login {DEMO_USER} / {DEMO_PASSWORD}")
        if not ApiToken.objects.filter(tenant=tenant, name="demo").exists():
            _token, raw = ApiToken.issue(tenant, "demo", TokenScope.ADMIN)
            self.stdout.write(f"Demo API token (shown once): {raw}")

    def ensure_provider(self, tenant, name, ptype, model, base_url, priority, weight):
        config = ProviderConfig.objects.filter(tenant=tenant, name=name).first()
        if config is not None:
            if config.base_url != base_url:
                config.base_url = base_url
                config.save(update_fields=["base_url", "updated"])
            return
        data = {"name": name, "type": ptype, "model": model, "base_url": base_url, "priority": priority,
                "weight": weight, "api_key": f"demo-key-for-{name}"}  # fmt: skip
        cleaned = validate_provider_config(tenant, data)
        apply_provider_config(ProviderConfig(tenant=tenant), cleaned).save()

    def ensure_route(self, tenant):
        route, created = ModelRoute.objects.get_or_create(
            tenant=tenant, name=DEMO_ROUTE, defaults={"description": "the demo's fast pool: OpenAI, then Anthropic"}
        )
        if not created:
            return
        for position, (name, model, weight) in enumerate(DEMO_ROUTE_TARGETS):
            provider = ProviderConfig.objects.get(tenant=tenant, name=name)
            ModelRouteTarget.objects.create(
                tenant=tenant, route=route, provider=provider, model=model, weight=weight, position=position
            )
