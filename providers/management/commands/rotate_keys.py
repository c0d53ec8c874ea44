from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError

from providers import secrets
from providers.models import ProviderConfig
from tenants.models import Tenant
from tenants.rls import tenant_context


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key under the first of AXONFLOW_ENCRYPTION_KEYS. "
        "Run after prepending a new key (AXONFLOW_ENCRYPTION_KEYS=new,old); then drop the old one."
    )

    def handle(self, **options):
        rotated, failed = 0, []
        for tenant in Tenant.objects.all():
            with tenant_context(tenant.pk):
                configs = ProviderConfig.objects.for_tenant(tenant).exclude(api_key_encrypted="").select_for_update()
                for config in configs:
                    try:
                        config.api_key_encrypted = secrets.rotate(config.api_key_encrypted)
                    except InvalidToken:
                        failed.append(f"{tenant.slug}/{config.name}")
                        continue
                    config.save(update_fields=["api_key_encrypted"])
                    rotated += 1
        self.stdout.write(f"Re-encrypted {rotated} provider key(s) under the newest key.")
        if failed:
            raise CommandError(
                f"{len(failed)} key(s) could not be decrypted with any configured key: {', '.join(failed)}"
            )
