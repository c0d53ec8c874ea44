from django.db import migrations

from tenants.rls import migration_operations


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial"), ("providers", "0002_row_level_security")]

    operations = migration_operations(
        tables=["routing_usagerecord", "routing_metricbucket"],
        foreign_keys=[
            ("routing_usagerecord", "provider_id", "providers_providerconfig", "SET NULL (provider_id)"),
            ("routing_usagerecord", "token_id", "tenants_apitoken", "SET NULL (token_id)"),
            ("routing_metricbucket", "provider_id", "providers_providerconfig", "CASCADE"),
        ],
    )
