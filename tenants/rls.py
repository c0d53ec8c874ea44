"""PostgreSQL row-level security: the policy SQL used by migrations, and the one way
code enters a tenant's context.

The tenant id lives in the transaction-local setting `app.current_org_id`
(`set_config(..., true)`), never in the session, so a pooled or persistent connection
cannot carry one tenant's context into another request. With no tenant set, policies
match nothing. On SQLite every function here is a no-op apart from the transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection, transaction

SETTING = "app.current_org_id"
CURRENT_TENANT_SQL = f"NULLIF(current_setting('{SETTING}', true), '')::bigint"


def enable_rls_sql(table: str) -> str:
    return f"""
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON {table}
            USING (tenant_id = {CURRENT_TENANT_SQL})
            WITH CHECK (tenant_id = {CURRENT_TENANT_SQL});
    """


def disable_rls_sql(table: str) -> str:
    return f"""
        DROP POLICY IF EXISTS tenant_isolation ON {table};
        ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
    """


def composite_fk_sql(table: str, column: str, target: str, on_delete: str) -> str:
    """A foreign key that includes the tenant: FK checks bypass RLS, so a row must not
    be able to point at another tenant's row by id alone."""
    name = f"{table}_{column}_tenant_fk"
    return (
        f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY (tenant_id, {column}) "
        f"REFERENCES {target} (tenant_id, id) ON DELETE {on_delete} DEFERRABLE INITIALLY DEFERRED;"
    )


def copy_rls_sql(cursor, source: str, target: str) -> list[str]:
    """Statements giving `target` the row-level security `source` has now, read from the
    catalog: ENABLE and FORCE as set there, and a copy of each policy (name, kind,
    command, roles, USING, WITH CHECK). Used for the usage table's partitions and when a
    migration rebuilds a table under its old name."""
    quote = connection.ops.quote_name
    cursor.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", [source])
    enabled, forced = cursor.fetchone()
    statements = [f"ALTER TABLE {quote(target)} ENABLE ROW LEVEL SECURITY"] if enabled else []
    if forced:
        statements.append(f"ALTER TABLE {quote(target)} FORCE ROW LEVEL SECURITY")
    cursor.execute(
        "SELECT policyname, permissive, cmd, roles, qual, with_check FROM pg_policies"
        " WHERE schemaname = current_schema() AND tablename = %s ORDER BY policyname",
        [source],
    )
    for name, permissive, command, roles, using, check in cursor.fetchall():
        to = ", ".join("PUBLIC" if role == "public" else quote(role) for role in roles)
        sql = f"CREATE POLICY {quote(name)} ON {quote(target)} AS {permissive} FOR {command} TO {to}"
        sql += f" USING ({using})" if using is not None else ""
        statements.append(sql + (f" WITH CHECK ({check})" if check is not None else ""))
    return statements


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def set_tenant(tenant_id: int | None) -> None:
    """Set the tenant for the current transaction; must run inside atomic()."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [SETTING, str(tenant_id or "")])


def current_tenant() -> int | None:
    """The tenant set for the current transaction (PostgreSQL), or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [SETTING])
        value = cursor.fetchone()[0]
    return int(value) if value else None


@contextlib.contextmanager
def tenant_context(tenant_id: int | None) -> Iterator[None]:
    """Run the block in one transaction whose queries see only this tenant's rows.

    Nested inside another transaction (an audit entry written during a request, a
    board render inside the console's request), the outer transaction's tenant is
    restored afterwards: the setting is transaction-local, and a savepoint's release
    would otherwise keep the inner tenant for the rest of the outer block."""
    outer = is_postgres() and connection.in_atomic_block
    previous = current_tenant() if outer else None
    with transaction.atomic():
        set_tenant(tenant_id)
        yield
    if outer and previous != tenant_id:
        set_tenant(previous)


def migration_operations(tables: list[str], foreign_keys: list[tuple[str, str, str, str]]):
    """Migration operations that enable RLS on `tables` and add composite tenant FKs
    (table, column, target table, ON DELETE action); nothing happens on SQLite."""
    from django.db import migrations

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in tables:
            schema_editor.execute(enable_rls_sql(table))
        for table, column, target, on_delete in foreign_keys:
            schema_editor.execute(composite_fk_sql(table, column, target, on_delete))

    def backward(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table, column, _target, _on_delete in foreign_keys:
            schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_{column}_tenant_fk;")
        for table in tables:
            schema_editor.execute(disable_rls_sql(table))

    return [migrations.RunPython(forward, backward)]
