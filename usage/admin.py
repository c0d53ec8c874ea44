from django.contrib import admin

from usage.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["created", "provider_name", "status", "status_code", "latency_ms", "total_tokens", "cost"]
    list_filter = ["status", "provider_name"]
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request):
        return False
