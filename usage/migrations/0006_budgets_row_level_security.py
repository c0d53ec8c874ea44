from django.db import migrations

from tenants.rls import migration_operations


class Migration(migrations.Migration):
    dependencies = [("usage", "0005_budgets")]

    operations = migration_operations(
        tables=["usage_budget", "usage_budgetspend"],
        foreign_keys=[
            ("usage_budget", "token_id", "tenants_apitoken", "CASCADE"),
            ("usage_budgetspend", "budget_id", "usage_budget", "CASCADE"),
        ],
    )
