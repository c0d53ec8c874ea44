"""The provider form the console's add and edit pages use (the Django admin shares its
error mapping). Django only parses what the browser sends (text, a checkbox, a JSON
textarea); every rule is `validate_provider_config`'s, and each error it raises lands
next to the field its `details["field"]` names.

The key is write-only: the field never renders a value, an empty field on edit keeps
the stored key, and the help text shows only its last four characters. Header values
in a custom provider's settings (they may carry credentials) are masked on the page
and restored from the stored ones when the mask comes back unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.db import IntegrityError, transaction

from axonflow_site.errors import AxonFlowError
from providers.audit import MASK, masked_settings
from providers.models import ProviderConfig, ProviderType
from providers.validation import NEEDS_BASE_URL, apply_provider_config, validate_provider_config
from tenants.models import Tenant

# What each adapter reads from `settings` (the `Settings` dataclass of
# providers/adapters/<type>.py; tests/console/test_providers_page.py keeps them in step).
_OPENAI_KEYS = (
    ("organization", "sent as the OpenAI-Organization header"),
    ("project", "sent as the OpenAI-Project header"),
    ("max_tokens_field", '"max_completion_tokens" (default) or "max_tokens"'),
    ("stream_usage", "ask for the usage chunk when streaming (default true)"),
    ("embedding_model", "for /v1/embeddings when no route names one (default text-embedding-3-small)"),
)
SETTINGS_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    ProviderType.OPENAI: _OPENAI_KEYS,
    ProviderType.ANTHROPIC: (
        ("anthropic_version", "the anthropic-version header"),
        ("beta", "a list of anthropic-beta flags"),
        ("max_tokens", "sent when a request gives none"),
    ),
    ProviderType.OLLAMA: (
        ("keep_alive", 'how long the model stays loaded ("5m", 0…)'),
        ("num_ctx", "context window size"),
        ("options", "extra model options such as top_k or seed, passed through"),
        ("embedding_model", "for /v1/embeddings when no route names one (default nomic-embed-text)"),
    ),
    ProviderType.GEMINI: (
        ("api_version", "default v1beta"),
        ("safety_settings", "a list of {category, threshold}, sent as safetySettings"),
        ("embedding_model", "for /v1/embeddings when no route names one (default gemini-embedding-001)"),
    ),
    ProviderType.BEDROCK: (
        ("aws_access_key_id", "with the secret access key as the API key"),
        ("health_probe", '"list_models" (default) or "converse", for roles that may not list models'),
        ("embedding_model", "a Titan or Cohere embedding model id (default amazon.titan-embed-text-v2:0)"),
    ),
    ProviderType.CUSTOM: (
        *_OPENAI_KEYS,
        ("headers", "{name: value} sent on every request (values are masked here)"),
        ("auth_header", "default Authorization"),
        ("auth_scheme", 'default Bearer; "" sends the bare key'),
        ("health_path", "default /models"),
        ("factory", "the name of a factory registered in AXONFLOW_PROVIDER_FACTORIES"),
        ("features", 'what the server can do, e.g. ["chat", "streaming"] for a text-only one (default: all)'),
    ),
}
SETTINGS_MAX_CHARS = 20_000
TYPE_SPECIFIC = ("base_url", "region", "settings")
NUMBER = {"inputmode": "numeric", "class": "number"}
KEY_FIELDS = ("api_key_encrypted", "api_key_last4", "secret_ref", "updated")


def field_error(exc: AxonFlowError) -> tuple[str | None, str]:
    """(field, message) of a rule-set error: the field its details name, and the message
    without the "field: " prefix, as it reads next to that field."""
    field = exc.details.get("field") if isinstance(exc.details, dict) else None
    if field is None and "provider_type" in exc.details:  # license_required: the type is at fault
        field = "type"
    message = exc.message
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    return field, message[:1].upper() + message[1:]


def settings_help(provider_type: str) -> str:
    keys = SETTINGS_KEYS.get(provider_type, ())
    return "; ".join(f"{key}: {meaning}" for key, meaning in keys)


class ProviderForm(forms.Form):
    name = forms.CharField(required=False, widget=forms.TextInput(attrs={"autocomplete": "off", "required": True}),
                           help_text="Letters, digits, '.', '_' or '-'; what clients and routes call it.")  # fmt: skip
    type = forms.CharField(required=False, widget=forms.Select(choices=ProviderType.choices))
    model = forms.CharField(required=False, widget=forms.TextInput(attrs={"required": True}),
                            help_text="The default upstream model, e.g. gpt-4o-mini.")  # fmt: skip
    models = forms.CharField(required=False, label="Other models served",
                             help_text="Comma-separated upstream model names clients may also ask for by name.")  # fmt: skip
    api_key = forms.CharField(required=False, strip=False, label="API key",
                              widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                              help_text="Write-only: stored encrypted and never shown again.")  # fmt: skip
    secret_ref = forms.CharField(required=False, label="Secret reference",
                                 help_text="Instead of a key: env:NAME, file:/path or a Secrets Manager ARN.")  # fmt: skip
    base_url = forms.CharField(required=False, label="Base URL")
    region = forms.CharField(required=False, help_text="The AWS region, e.g. us-east-1.")
    settings = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}))
    enabled = forms.BooleanField(required=False, initial=True)
    priority = forms.CharField(required=False, initial=0, widget=forms.NumberInput(attrs=NUMBER),
                               help_text="-1000 to 1000; higher is tried first.")  # fmt: skip
    weight = forms.CharField(required=False, initial=50, widget=forms.NumberInput(attrs=NUMBER),
                             help_text="0 to 100: its share of traffic within its priority; 0 = failover only.")  # fmt: skip
    rate_limit = forms.CharField(required=False, initial=0, label="Rate limit", widget=forms.NumberInput(attrs=NUMBER),
                                 help_text="Requests per minute; 0 = unlimited.")  # fmt: skip
    timeout_seconds = forms.CharField(required=False, initial=30, label="Timeout (seconds)",
                                      widget=forms.NumberInput(attrs=NUMBER), help_text="1 to 600.")  # fmt: skip
    cost_input_per_1k = forms.CharField(required=False, label="Cost per 1K input tokens",
                                        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
                                        help_text="Empty: from the price table.")  # fmt: skip
    cost_output_per_1k = forms.CharField(required=False, label="Cost per 1K output tokens",
                                         widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
                                         help_text="Empty: from the price table.")  # fmt: skip

    def __init__(self, *args, tenant: Tenant, instance: ProviderConfig | None = None, **kwargs):
        if instance is not None:
            kwargs.setdefault("initial", initial_of(instance))
        super().__init__(*args, **kwargs)
        self.tenant, self.instance = tenant, instance
        self.validated: dict[str, Any] = {}
        if instance is not None:
            self.fields["type"].disabled = True  # the type is fixed after creation
            self.fields["type"].help_text = "Fixed after creation: create a new provider to change it."
            if instance.api_key_last4:
                self.fields["api_key"].help_text = f"Stored: ••••{instance.api_key_last4}. Leave empty to keep it."
        self.describe_type(self.current_type())

    def current_type(self) -> str:
        """The type the type-specific fields follow: the stored one, else what was chosen."""
        if self.instance is not None:
            return self.instance.type
        chosen = self.data.get("type") if self.is_bound else self.initial.get("type")
        return chosen if chosen in ProviderType.values else ProviderType.OPENAI

    def describe_type(self, provider_type: str) -> None:
        needs_url = provider_type in NEEDS_BASE_URL
        self.fields["base_url"].help_text = (
            f"Required for {provider_type}." if needs_url else "Optional: leave empty for the provider's public API."
        )
        self.fields["settings"].help_text = "A JSON object. Keys: " + settings_help(provider_type)

    def type_specific_fields(self) -> list[forms.BoundField]:
        shown = ["base_url", "settings"]
        if self.current_type() == ProviderType.BEDROCK:
            shown.insert(1, "region")
        return [self[name] for name in shown]

    def clean_settings(self) -> dict:
        text = self.cleaned_data.get("settings", "").strip()
        if not text:
            return {}
        if len(text) > SETTINGS_MAX_CHARS:
            raise forms.ValidationError(f"Must be at most {SETTINGS_MAX_CHARS} characters of JSON.")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise forms.ValidationError(f"Must be valid JSON ({str(exc)[:80]}).") from None
        return restore_masked_headers(value, self.instance)

    def clean_models(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data.get("models", "").split(",") if name.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        data = {name: cleaned[name] for name in self.fields if name in cleaned}
        if self.instance is not None:
            data.pop("type", None)
        if not data.get("api_key"):
            data.pop("api_key", None)
        elif data.get("secret_ref"):
            self.add_error("api_key", "Give an API key or a secret reference, not both: clear the other field.")
            return cleaned
        try:
            self.validated = validate_provider_config(self.tenant, data, self.instance)
        except AxonFlowError as exc:
            field, message = field_error(exc)
            self.add_error(field if field in self.fields else None, message)
        return cleaned

    def save(self) -> ProviderConfig | None:
        """Create or update the provider from the validated fields. None (with the error
        on `name`) when a concurrent request took the name first."""
        config = apply_provider_config(self.instance or ProviderConfig(tenant=self.tenant), self.validated)
        # On edit, write only the form's fields: the health worker updates the same row.
        fields = None if self.instance is None else sorted({*self.validated, *KEY_FIELDS} - {"api_key"})
        try:
            with transaction.atomic():
                config.save(update_fields=fields)
        except IntegrityError:
            self.add_error("name", f"A provider named '{config.name}' already exists.")
            return None
        return config

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                self.fields[name].widget.attrs["aria-invalid"] = "true"


def initial_of(config: ProviderConfig) -> dict[str, Any]:
    return {
        "name": config.name, "type": config.type, "model": config.model, "models": ", ".join(config.models or []),
        "secret_ref": config.secret_ref,
        "base_url": config.base_url, "region": config.region, "enabled": config.enabled,
        "priority": config.priority, "weight": config.weight, "rate_limit": config.rate_limit,
        "timeout_seconds": config.timeout_seconds,
        "settings": json.dumps(masked_settings(config.settings), indent=2) if config.settings else "",
        "cost_input_per_1k": config.cost_input_per_1k if config.cost_input_per_1k is not None else "",
        "cost_output_per_1k": config.cost_output_per_1k if config.cost_output_per_1k is not None else "",
    }  # fmt: skip


def restore_masked_headers(settings: Any, instance: ProviderConfig | None) -> Any:
    """Header values that came back as the mask keep their stored value."""
    if not isinstance(settings, dict) or not isinstance(settings.get("headers"), dict):
        return settings
    stored = (instance.settings or {}).get("headers") if instance is not None else None
    stored = stored if isinstance(stored, dict) else {}
    headers = {}
    for name, value in settings["headers"].items():
        headers[name] = stored[name] if value == MASK and name in stored else value
    return {**settings, "headers": headers}
