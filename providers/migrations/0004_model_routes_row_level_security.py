from django.db import migrations

from tenants.rls import migration_operations


class Migration(migrations.Migration):
    dependencies = [("providers", "0003_operator_state_and_model_routes")]

    operations = migration_operations(
        tables=["providers_modelroute", "providers_modelroutetarget"],
        foreign_keys=[
            ("providers_modelroutetarget", "route_id", "providers_modelroute", "CASCADE"),
            ("providers_modelroutetarget", "provider_id", "providers_providerconfig", "CASCADE"),
        ],
    )
