"""DRF serializers: request bodies (validated here for shape only; the rules live in
providers/validation.py) and response representations for the OpenAPI schema."""

from __future__ import annotations

import copy

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from providers.audit import masked_settings
from providers.models import HealthSource, ProviderConfig, ProviderType


class ProviderSerializer(serializers.ModelSerializer):
    """Read representation: the key itself is never returned, only whether one is set
    and its last four characters."""

    api_key_set = serializers.BooleanField(read_only=True)
    api_key_last4 = serializers.CharField(read_only=True)
    # Declared: ModelSerializer drops allow_blank from read-only fields, and "" (never checked) is a value.
    health_source = serializers.ChoiceField(choices=HealthSource.choices, allow_blank=True, read_only=True)
    base_url = serializers.URLField(allow_blank=True, read_only=True, help_text="Blank: the adapter's default.")

    settings = serializers.SerializerMethodField(
        help_text="Type-specific settings; a custom provider's header values are masked (••••): send them back "
        "masked to keep them."
    )

    def get_settings(self, config: ProviderConfig) -> dict:
        return masked_settings(config.settings)

    class Meta:
        model = ProviderConfig
        fields = [
            "name", "type", "base_url", "model", "models", "region", "enabled", "priority", "weight", "rate_limit",
            "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref",
            "api_key_set", "api_key_last4", "health_status", "health_source", "last_checked_at",
            "operator_state", "operator_reason", "operator_by", "operator_at", "operator_until",
            "created", "updated",
        ]  # fmt: skip
        read_only_fields = fields


class ProviderWriteSerializer(serializers.Serializer):
    """Documents the writable fields; unknown fields are rejected."""

    name = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        help_text="Letters, digits, '.', '_', '-'; not `auto`, not a route's name.",
    )
    type = serializers.ChoiceField(choices=ProviderType.choices)
    api_key = serializers.CharField(required=False, write_only=True, help_text="Write-only; encrypted at rest.")
    secret_ref = serializers.CharField(required=False, help_text="env:NAME, file:/path or a Secrets Manager ARN")
    base_url = serializers.URLField(required=False, allow_blank=True, help_text="Blank: the adapter's default.")
    model = serializers.CharField(max_length=200)
    models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=100,
        help_text="Other upstream model names this provider serves; clients may ask for any of them by name.",
    )
    region = serializers.CharField(required=False)
    enabled = serializers.BooleanField(required=False)
    priority = serializers.IntegerField(required=False, min_value=-1000, max_value=1000)
    weight = serializers.IntegerField(required=False, min_value=0, max_value=100)
    rate_limit = serializers.IntegerField(required=False, min_value=0, help_text="requests per minute, 0 = unlimited")
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=600)
    settings = serializers.JSONField(required=False)
    cost_input_per_1k = serializers.DecimalField(max_digits=12, decimal_places=6, required=False, allow_null=True)
    cost_output_per_1k = serializers.DecimalField(max_digits=12, decimal_places=6, required=False, allow_null=True)


# --- completions (routing/api/completions.py) -----------------------------------------------
# Strict fields: DRF's defaults coerce ("5" -> 5, 1 -> "1", "yes" -> True); a gateway
# should refuse a wrong type instead of guessing.


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}]}
)
class StopField(serializers.Field):
    """A string or a list of at most 16 strings."""

    default_error_messages = {"invalid": "Must be a string or a list of at most 16 strings."}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return [data]
        if isinstance(data, list) and len(data) <= 16 and all(isinstance(s, str) for s in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class NoUnknownFieldsMixin:
    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class MessageSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = StrictCharField(allow_blank=True, trim_whitespace=False)


class CompletionRequestSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    """Body of POST /api/v1/completions: `prompt` or `messages`, generation options, and
    the routing options `preferred_provider`, `weights` (0-100 each) and `disable_failover`."""

    prompt = StrictCharField(required=False, trim_whitespace=False)
    messages = MessageSerializer(many=True, required=False, max_length=2048)
    system = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    max_tokens = StrictIntegerField(required=False, min_value=1, max_value=1_000_000)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, min_value=0, max_value=1)
    stop = StopField(required=False)
    model = StrictCharField(
        required=False,
        max_length=200,
        help_text="A provider, a model route, `auto` or a model a provider serves (SPEC §2 rule 0); "
        "none: every provider.",
    )
    stream = StrictBooleanField(required=False, default=False, help_text="Answer as server-sent events.")
    preferred_provider = StrictCharField(required=False, max_length=64)
    weights = serializers.DictField(
        child=StrictFloatField(min_value=0, max_value=100), required=False, help_text="{provider name: 0-100}"
    )
    disable_failover = StrictBooleanField(required=False, default=False)

    def get_fields(self):
        # DRF deep-copies every declared field for each instance (Field.__deepcopy__
        # rebuilds the field from its init arguments, recursively): measured, the largest
        # single cost of POST /api/v1/completions. A shallow copy is enough here: bind()
        # sets its attributes on the copy, and validating mutates no field state (the
        # nested child serializers are shared and stateless while validating).
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}

    def validate(self, attrs):
        has_prompt, has_messages = "prompt" in attrs, bool(attrs.get("messages"))
        if has_prompt == has_messages:
            raise serializers.ValidationError({"prompt": ["Send exactly one of prompt or messages."]})
        if has_messages and not any(m["role"] != "system" for m in attrs["messages"]):
            raise serializers.ValidationError({"messages": ["At least one user or assistant message is needed."]})
        return attrs


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class CostSerializer(serializers.Serializer):
    amount = serializers.CharField(help_text="Decimal string, e.g. \"0.00012000\".")
    currency = serializers.CharField()


class AttemptSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField(
        allow_blank=True, default="", help_text="The upstream model this attempt asked the provider for."
    )
    outcome = serializers.CharField(help_text="success, http_<status>, timeout, connect_error, malformed, rate_limited…")
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)


class RouteSerializer(serializers.Serializer):
    provider_name = serializers.CharField()
    model = serializers.CharField()
    response_time_ms = serializers.FloatField()
    attempts = AttemptSerializer(many=True)


class CompletionResponseSerializer(serializers.Serializer):
    id = serializers.CharField()
    content = serializers.CharField()
    model = serializers.CharField()
    provider = serializers.CharField()
    finish_reason = serializers.CharField(allow_null=True)
    usage = UsageSerializer()
    cost = CostSerializer()
    route = RouteSerializer()


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
