"""Django admin for provider configs. The key field is write-only: the form never
renders the stored value, only its last four characters, and every save goes through
validate_provider_config, whose errors land next to their field (providers/forms.py). Rows visible are those of the admin's active tenant
(row-level security), switched with the console's tenant switcher."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from axonflow_site.errors import AxonFlowError
from providers.forms import field_error
from providers.models import HealthResult, ProviderConfig
from providers.validation import apply_provider_config, validate_provider_config

FORM_FIELDS = [
    "name", "type", "base_url", "model", "region", "enabled", "priority", "weight", "rate_limit",
    "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref",
]  # fmt: skip


class ProviderConfigForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current key.",
    )

    class Meta:
        model = ProviderConfig
        fields = ["tenant", *FORM_FIELDS]

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
        if tenant is None or self.errors:
            return cleaned
        data = {f: cleaned.get(f) for f in FORM_FIELDS if f in cleaned}
        data = {k: ("" if v is None and k not in ("cost_input_per_1k", "cost_output_per_1k") else v) for k, v in data.items()}
        data = {k: v for k, v in data.items() if not (self.instance.pk and k == "type")}
        if cleaned.get("api_key"):
            data["api_key"] = cleaned["api_key"]
        try:
            self.validated = validate_provider_config(tenant, data, self.instance if self.instance.pk else None)
        except AxonFlowError as exc:
            field, message = field_error(exc)  # next to its field, as in the console's form
            self.add_error(field if field in self.fields else None, forms.ValidationError(message, code=exc.code))
        return cleaned

    def save(self, commit=True):
        config = super().save(commit=False)
        apply_provider_config(config, self.validated)
        if commit:
            config.save()
        return config


@admin.register(ProviderConfig)
class ProviderConfigAdmin(admin.ModelAdmin):
    form = ProviderConfigForm
    list_display = ["name", "tenant", "type", "model", "enabled", "priority", "weight", "health_status", "masked_key"]
    list_filter = ["type", "enabled", "health_status"]
    search_fields = ["name", "model"]
    readonly_fields = ["masked_key", "health_status", "health_source", "last_checked_at"]

    @admin.display(description="API key")
    def masked_key(self, obj: ProviderConfig) -> str:
        if obj.api_key_last4:
            return f"••••{obj.api_key_last4}"
        return "reference" if obj.secret_ref else "—"


@admin.register(HealthResult)
class HealthResultAdmin(admin.ModelAdmin):
    list_display = ["provider", "status", "latency_ms", "source", "checked_at"]
    list_filter = ["status", "source"]
    readonly_fields = [f.name for f in HealthResult._meta.fields]
