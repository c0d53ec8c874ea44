"""UsageRecord and MetricBucket move here from the `routing` app, in Django's state only.

The tables (`routing_usagerecord`, `routing_metricbucket`), their rows, indexes,
composite foreign keys and row-level security policies stay exactly as routing's
migrations 0001 and 0002 made them: no SQL runs. routing 0003 drops the models from
routing's state once this migration has claimed them. Content types (and with them the
admin log and permissions) follow the models to the new app label.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

MOVED = ("usagerecord", "metricbucket")


def relabel_content_types(old: str, new: str):
    def run(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        for model in MOVED:
            if not ContentType.objects.filter(app_label=new, model=model).exists():
                ContentType.objects.filter(app_label=old, model=model).update(app_label=new)

    return run


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("providers", "0002_row_level_security"),
        ("routing", "0002_row_level_security"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="MetricBucket",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("minute", models.DateTimeField()),
                        ("request_count", models.PositiveIntegerField(default=0)),
                        ("error_count", models.PositiveIntegerField(default=0)),
                        ("latency_sum_ms", models.FloatField(default=0)),
                        ("latency_histogram", models.JSONField(default=list)),
                        ("prompt_tokens", models.PositiveBigIntegerField(default=0)),
                        ("completion_tokens", models.PositiveBigIntegerField(default=0)),
                        ("cost", models.DecimalField(decimal_places=8, default=0, max_digits=16)),
                        (
                            "provider",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="metric_buckets",
                                to="providers.providerconfig",
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tenants.tenant"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "routing_metricbucket",
                        "indexes": [models.Index(fields=["tenant", "minute"], name="metric_tenant_minute")],
                        "constraints": [
                            models.UniqueConstraint(fields=("provider", "minute"), name="metric_bucket_unique")
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("provider_name", models.CharField(blank=True, default="", max_length=64)),
                        ("providers_tried", models.JSONField(blank=True, default=list)),
                        ("attempts", models.JSONField(blank=True, default=list)),
                        ("attempt_count", models.PositiveSmallIntegerField(default=0)),
                        (
                            "status",
                            models.CharField(choices=[("success", "Success"), ("error", "Error")], max_length=10),
                        ),
                        ("status_code", models.PositiveSmallIntegerField(default=200)),
                        ("error_code", models.CharField(blank=True, default="", max_length=40)),
                        ("model", models.CharField(blank=True, default="", max_length=200)),
                        ("stream", models.BooleanField(default=False)),
                        ("latency_ms", models.FloatField(default=0)),
                        ("prompt_tokens", models.PositiveIntegerField(default=0)),
                        ("completion_tokens", models.PositiveIntegerField(default=0)),
                        ("total_tokens", models.PositiveIntegerField(default=0)),
                        ("cost", models.DecimalField(decimal_places=8, default=0, max_digits=14)),
                        ("currency", models.CharField(default="USD", max_length=3)),
                        ("request_id", models.CharField(blank=True, default="", max_length=64)),
                        ("prompt", models.TextField(blank=True, null=True)),
                        ("created", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "provider",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="providers.providerconfig",
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tenants.tenant"
                            ),
                        ),
                        (
                            "token",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="tenants.apitoken",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "routing_usagerecord",
                        "ordering": ["-created"],
                        "indexes": [
                            models.Index(fields=["tenant", "created"], name="usage_tenant_time"),
                            models.Index(
                                fields=["tenant", "provider_name", "created"], name="usage_tenant_provider_time"
                            ),
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types("routing", "usage"), relabel_content_types("usage", "routing")),
    ]
