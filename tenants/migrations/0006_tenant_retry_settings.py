from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_tenant_api_rate_limit")]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="retry_settings",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='Retry policy overrides, e.g. {"max_attempts": 3, "deadline_seconds": 30}; see docs/reliability.md.',
            ),
        ),
    ]
