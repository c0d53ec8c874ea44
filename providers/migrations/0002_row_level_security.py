from django.db import migrations

from tenants.rls import migration_operations


class Migration(migrations.Migration):
    dependencies = [("providers", "0001_initial"), ("tenants", "0001_initial")]

    operations = migration_operations(
        tables=["providers_providerconfig", "providers_healthresult"],
        foreign_keys=[("providers_healthresult", "provider_id", "providers_providerconfig", "CASCADE")],
    )
