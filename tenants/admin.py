from django.contrib import admin

from tenants.models import ApiToken, Membership, Tenant


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
