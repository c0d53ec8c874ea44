from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_audit_row_level_security")]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="api_rate_limit",
            field=models.PositiveIntegerField(
                default=0,
                help_text="API requests per minute for all of this tenant's tokens together; 0 = unlimited.",
            ),
        ),
    ]
