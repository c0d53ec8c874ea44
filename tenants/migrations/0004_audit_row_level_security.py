from django.db import migrations

from tenants.rls import migration_operations


class Migration(migrations.Migration):
    dependencies = [("tenants", "0003_token_expiry_and_audit_log")]

    operations = migration_operations(tables=["tenants_auditentry"], foreign_keys=[])
