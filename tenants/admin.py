import json

from django.contrib import admin
from django.utils.html import format_html

from tenants.models import ApiToken, AuditEntry, Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "plan", "health_interval_seconds", "created"]
    list_filter = ["plan"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role", "tenant"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "scope", "prefix", "created", "last_used", "revoked_at"]
    list_filter = ["scope", "tenant"]
    readonly_fields = ["prefix", "created", "last_used"]
    exclude = ["token_hash"]

    def has_add_permission(self, request):
        return False  # tokens are shown once: create them with `createtoken` or in the console


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The log, read-only: entries are written by tenants/audit.py alone and never edited.
    Rows shown are those of the admin's active tenant (row-level security)."""

    list_display = ["created", "tenant", "actor_kind", "actor", "action", "object_type", "object_name"]
    list_filter = ["actor_kind", "object_type", "action", "tenant"]
    search_fields = ["actor", "object_name", "object_id"]
    list_select_related = ["tenant"]
    date_hierarchy = "created"
    fields = ["created", "tenant", "actor_kind", "actor", "action", "object_type", "object_id", "object_name",
              "before_json", "after_json"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="before")
    def before_json(self, entry: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry.before, indent=2, ensure_ascii=False))

    @admin.display(description="after")
    def after_json(self, entry: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry.after, indent=2, ensure_ascii=False))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Never entry by entry. Deleting a tenant takes its log with it, and Django asks
        # this admin about every entry the cascade removes: allow it there alone.
        match = getattr(request, "resolver_match", None)
        return (
            match is not None
            and match.url_name in ("tenants_tenant_delete", "tenants_tenant_changelist")
            and super().has_delete_permission(request, obj)
        )
