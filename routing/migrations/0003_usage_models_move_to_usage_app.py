"""UsageRecord and MetricBucket now belong to the `usage` app (its migration 0001):
drop them from routing's state. No SQL: the tables stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("routing", "0002_row_level_security"), ("usage", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel("UsageRecord"), migrations.DeleteModel("MetricBucket")],
        ),
    ]
