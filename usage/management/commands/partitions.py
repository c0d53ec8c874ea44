"""`manage.py partitions [--days-ahead N] [--since YYYY-MM-DD]`: create the usage
table's day partitions from today (or `--since`) through N days ahead, and report the
rows waiting in the DEFAULT partition (usage/partitions.py).

Idempotent and safe beside the running gateway and other callers: run it daily from
cron (`prune` runs it too, and `make migrate` after migrating). With `--since` it
creates past days as well, moving the rows that the DEFAULT partition holds for them
into their day. On SQLite, where the table is not partitioned, it does nothing.
"""

from __future__ import annotations

import argparse
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError

from usage import partitions


def parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, YYYY-MM-DD: {value!r}") from None


class Command(BaseCommand):
    help = "Create the usage table's day partitions ahead of time (PostgreSQL) and report rows outside them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days-ahead", type=int, default=partitions.DAYS_AHEAD, help="days after today to create (default 7)"
        )
        parser.add_argument("--since", type=parse_day, default=None, help="first day to create (default today, UTC)")

    def handle(self, *args, days_ahead=partitions.DAYS_AHEAD, since=None, **options):
        if not partitions.is_partitioned():
            self.stdout.write("The usage table is not partitioned on this database: nothing to do.")
            return
        try:
            created = partitions.ensure_partitions(days_ahead, since)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except OperationalError as exc:  # the lock was not granted within LOCK_TIMEOUT
            raise CommandError(f"could not lock the usage table; run again later ({exc})") from None
        days = ", ".join(str(day) for day in created)
        self.stdout.write(f"Created {len(created)} day partition(s)" + (f": {days}." if created else "."))
        waiting = partitions.rows_in_default()
        if waiting:
            listed = ", ".join(f"{day}: {count}" for day, count in sorted(waiting.items()))
            self.stdout.write(
                f"The DEFAULT partition holds {sum(waiting.values())} row(s) ({listed}); "
                "`partitions --since DAY` moves those of DAY and later into day partitions."
            )
