"""PostgreSQL: the usage record table becomes `PARTITION BY RANGE (created)`, one
partition per UTC day plus a DEFAULT partition (usage/partitions.py). SQLite keeps the
plain table; nothing runs there, and Django's state does not change (`id` stays the pk).

PostgreSQL cannot partition a table in place, so the table is rebuilt under its name,
in the migration's transaction, with the table locked (writes wait for the copy):

1. lock it; read what must survive from the catalog: indexes, CHECK and FOREIGN KEY
   constraints, row-level security and its policies, grants, owner, the id sequence's
   position. A foreign key pointing *to* the table stops the migration (PostgreSQL
   could only keep it on the full key (id, created)); there is none today.
2. rename it aside and turn its RLS off (the owner is subject to FORCE, and the copy
   must see every tenant's rows);
3. create the new table `LIKE` it (columns, NOT NULL, defaults, identity), partitioned,
   with the DEFAULT partition and one partition per day from today through DAYS_AHEAD
   days ahead and per earlier day found in the data (later rows go to DEFAULT);
4. add the foreign keys, copy every row (ids kept, each checked against the foreign
   keys), check the count, drop the old table;
5. take the name back; primary key (id, created); the same indexes, CHECK constraints,
   policies (on the parent and on each partition), grants and owner as before; the id
   sequence continues after the old one's last value, so no id is ever reused.

The reverse rebuilds a plain table the same way (primary key (id)), keeping every row.
On a large table the copy holds the lock for its duration: prune first (`manage.py
prune` deletes old rows in batches before this migration) to shorten it.
"""

from datetime import timedelta

from django.db import migrations

from tenants.rls import copy_rls_sql
from usage.partitions import (
    DAYS_AHEAD,
    DEFAULT_PARTITION,
    TABLE,
    create_default_sql,
    create_partition_sql,
    partition_name,
    today,
)

OLD, NEW = f"{TABLE}_rebuild_old", f"{TABLE}_rebuild_new"


def fetch(cursor, sql: str, params=None) -> list[tuple]:
    cursor.execute(sql, params or [])
    return cursor.fetchall()


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def catalog(cursor) -> dict:
    """What the rebuilt table must have again, read from the table as it is now."""
    [(owner, partitioned)] = fetch(
        cursor, "SELECT pg_get_userbyid(relowner), relkind = 'p' FROM pg_class WHERE oid = %s::regclass", [TABLE]
    )
    referencing = fetch(
        cursor, "SELECT conname, conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass"
        " AND conparentid = 0", [TABLE]
    )  # fmt: skip
    if referencing:
        raise RuntimeError(f"foreign keys point to {TABLE} ({referencing}); drop them before partitioning it")
    [(identity,)] = fetch(
        cursor, "SELECT attidentity FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'id'", [TABLE]
    )
    if identity not in ("a", "d"):
        raise RuntimeError(f"{TABLE}.id is not an identity column; this migration expects Django's BigAutoField")
    [(sequence,)] = fetch(cursor, "SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    [(last_value, is_called)] = fetch(cursor, f"SELECT last_value, is_called FROM {sequence}")
    indexes = [
        # A partitioned parent's index reads "ON ONLY table": replayed, it would not recurse.
        definition.replace(" ON ONLY ", " ON ", 1)
        for (definition,) in fetch(
            cursor, "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass"
            " AND NOT i.indisprimary ORDER BY i.indexrelid", [TABLE]
        )
    ]  # fmt: skip
    if any(definition.startswith("CREATE UNIQUE") for definition in indexes):
        raise RuntimeError(f"{TABLE} has a unique index besides its primary key; a partitioned table cannot keep it")
    constraints = fetch(
        cursor, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " AND contype IN ('c', 'f') AND conparentid = 0 ORDER BY contype, conname", [TABLE]
    )  # fmt: skip
    grants = fetch(
        cursor, "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,"
        " a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = %s::regclass AND a.grantee <> c.relowner", [TABLE]
    )  # fmt: skip
    return {
        "owner": owner,
        "partitioned": partitioned,
        "next_id": (last_value + 1) if is_called else last_value,
        "indexes": indexes,
        "constraints": constraints,
        "rls": copy_rls_sql(cursor, TABLE, TABLE),
        "grants": grants,
    }


def rebuild(schema_editor, partitioned: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {quote(TABLE)} IN ACCESS EXCLUSIVE MODE")
        before = catalog(cursor)
        if before["partitioned"] == partitioned:
            return
        cursor.execute(f"ALTER TABLE {quote(TABLE)} RENAME TO {quote(OLD)}")
        cursor.execute(f"ALTER TABLE {quote(OLD)} DISABLE ROW LEVEL SECURITY")
        cursor.execute(
            f"CREATE TABLE {quote(NEW)} (LIKE {quote(OLD)} INCLUDING ALL EXCLUDING INDEXES EXCLUDING CONSTRAINTS"
            f" EXCLUDING STATISTICS)" + (" PARTITION BY RANGE (created)" if partitioned else "")
        )
        partitions = []  # the new table's, by name
        if partitioned:
            cursor.execute(create_default_sql(NEW))
            ahead = [today() + timedelta(days=i) for i in range(DAYS_AHEAD + 1)]
            found = fetch(cursor, f"SELECT DISTINCT (created AT TIME ZONE 'UTC')::date FROM {quote(OLD)}")
            days = {*ahead, *(day for (day,) in found if day <= ahead[-1])}  # later ones: DEFAULT
            for day in sorted(days):
                cursor.execute(create_partition_sql(day, NEW))
            partitions = [DEFAULT_PARTITION, *(partition_name(day) for day in sorted(days))]
        # Foreign keys before the rows: validating them in bulk afterwards would read the
        # referenced tables as their owner under FORCE ROW LEVEL SECURITY and no tenant, see
        # no row and fail; checked row by row as the copy inserts, they bypass RLS as they
        # always do. Immediate, because deferred checks would block the DDL below.
        for name, definition in before["constraints"]:
            if definition.startswith("FOREIGN KEY"):
                cursor.execute(f"ALTER TABLE {quote(NEW)} ADD CONSTRAINT {quote(name)} {definition}")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"INSERT INTO {quote(NEW)} SELECT * FROM {quote(OLD)}")
        copied = cursor.rowcount
        [(count,)] = fetch(cursor, f"SELECT count(*) FROM {quote(OLD)}")
        if copied != count:
            raise RuntimeError(f"copied {copied} of {count} usage records; nothing was changed")
        cursor.execute(f"DROP TABLE {quote(OLD)}")
        cursor.execute(f"ALTER TABLE {quote(NEW)} RENAME TO {quote(TABLE)}")
        [(sequence,)] = fetch(cursor, "SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {quote(TABLE + '_id_seq')}")
        [(max_id,)] = fetch(cursor, f"SELECT coalesce(max(id), 0) FROM {quote(TABLE)}")
        cursor.execute(
            f"ALTER TABLE {quote(TABLE)} ALTER COLUMN id RESTART WITH {int(max(before['next_id'], max_id + 1))}"
        )
        key = "id, created" if partitioned else "id"
        cursor.execute(f"ALTER TABLE {quote(TABLE)} ADD CONSTRAINT {quote(TABLE + '_pkey')} PRIMARY KEY ({key})")
        for definition in before["indexes"]:
            cursor.execute(definition)
        for name, definition in before["constraints"]:
            if not definition.startswith("FOREIGN KEY"):
                cursor.execute(f"ALTER TABLE {quote(TABLE)} ADD CONSTRAINT {quote(name)} {definition}")
        for statement in before["rls"]:
            cursor.execute(statement)
        for name in partitions:
            for statement in copy_rls_sql(cursor, TABLE, name):
                cursor.execute(statement)
        for grantee, privilege, grantable in before["grants"]:
            cursor.execute(
                f"GRANT {privilege} ON {quote(TABLE)} TO {grantee}" + (" WITH GRANT OPTION" if grantable else "")
            )
        [(current,)] = fetch(cursor, "SELECT current_user")
        if current != before["owner"]:  # migrated by another role (a superuser): the app's role keeps the table
            for name in [TABLE, *partitions]:
                cursor.execute(f"ALTER TABLE {quote(name)} OWNER TO {quote(before['owner'])}")
        cursor.execute(f"ANALYZE {quote(TABLE)}")


def partition(apps, schema_editor):
    rebuild(schema_editor, partitioned=True)


def unpartition(apps, schema_editor):
    rebuild(schema_editor, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [("usage", "0002_routing_trace_and_keyset_index")]

    operations = [migrations.RunPython(partition, unpartition)]
