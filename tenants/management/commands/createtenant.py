from django.core.management.base import BaseCommand, CommandError

from tenants.models import Plan, Tenant


class Command(BaseCommand):
    help = "Create a tenant (or update its name and plan if the slug exists)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="display name (default: the slug)")
        parser.add_argument("--plan", choices=Plan.values, default=Plan.COMMUNITY)

    def handle(self, slug, name, plan, **options):
        from django.utils.text import slugify

        if slugify(slug) != slug:
            raise CommandError(f"'{slug}' is not a valid slug: use lowercase letters, digits and hyphens.")
        tenant, created = Tenant.objects.update_or_create(slug=slug, defaults={"name": name or slug, "plan": plan})
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} tenant {tenant.slug} ({tenant.name}, {tenant.plan} plan)")
