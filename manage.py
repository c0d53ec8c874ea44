#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axonflow_site.settings")
    from django.core.management import execute_from_command_line

    # Changes a command makes are audited as the command (the server's requests act
    # as their user or token instead).
    from tenants.actor import set_default_actor

    set_default_actor("command", sys.argv[1] if len(sys.argv) > 1 else "manage.py")

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
