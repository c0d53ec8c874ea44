from django.core.management.base import BaseCommand, CommandError

from tenants.models import ApiToken, Tenant, TokenScope


class Command(BaseCommand):
    help = "Create an API token and print it once, on its own line (it is stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--scope", choices=TokenScope.values, default=TokenScope.COMPLETIONS)

    def handle(self, slug, name, scope, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant '{slug}'.")
        _token, raw = ApiToken.issue(tenant, name, scope)
        self.stderr.write(f"Token '{name}' ({scope}) for {slug}; it will not be shown again:")
        self.stdout.write(raw)
