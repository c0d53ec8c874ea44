import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tenants.models import Membership, Role, Tenant


class Command(BaseCommand):
    help = "Give a user a role in a tenant, creating the user if needed."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("username")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER)
        parser.add_argument("--password", help="password for a new user (prompted when omitted)")
        parser.add_argument("--email", default="")

    def handle(self, slug, username, role, password, email, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant '{slug}'. Create it with `createtenant {slug}`.")
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if password is None:
                if not self.stdin_is_interactive():
                    raise CommandError("A new user needs --password (no terminal to prompt on).")
                password = getpass.getpass(f"Password for {username}: ")
            if len(password) < 8:
                raise CommandError("The password must be at least 8 characters.")
            user = User.objects.create_user(username=username, email=email, password=password)
            self.stdout.write(f"Created user {username}")
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
        self.stdout.write(f"{username} is {role} of {tenant.slug}")

    def stdin_is_interactive(self) -> bool:
        import sys

        return sys.stdin.isatty()
