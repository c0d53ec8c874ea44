"""DRF serializers: request bodies (validated here for shape only; the rules live in
providers/validation.py) and response representations for the OpenAPI schema."""

from __future__ import annotations

from rest_framework import serializers

from providers.models import ProviderConfig, ProviderType


class ProviderSerializer(serializers.ModelSerializer):
    """Read representation: the key itself is never returned, only whether one is set
    and its last four characters."""

    api_key_set = serializers.BooleanField(read_only=True)
    api_key_last4 = serializers.CharField(read_only=True)

    class Meta:
        model = ProviderConfig
        fields = [
            "name", "type", "base_url", "model", "region", "enabled", "priority", "weight", "rate_limit",
            "timeout_seconds", "settings", "cost_input_per_1k", "cost_output_per_1k", "secret_ref",
            "api_key_set", "api_key_last4", "health_status", "health_source", "last_checked_at",
            "created", "updated",
        ]  # fmt: skip
        read_only_fields = fields


class ProviderWriteSerializer(serializers.Serializer):
    """Documents the writable fields; unknown fields are rejected."""

    name = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=ProviderType.choices)
    api_key = serializers.CharField(required=False, write_only=True, help_text="Write-only; encrypted at rest.")
    secret_ref = serializers.CharField(required=False, help_text="env:NAME, file:/path or a Secrets Manager ARN")
    base_url = serializers.URLField(required=False)
    model = serializers.CharField(max_length=200)
    region = serializers.CharField(required=False)
    enabled = serializers.BooleanField(required=False)
    priority = serializers.IntegerField(required=False, min_value=-1000, max_value=1000)
    weight = serializers.IntegerField(required=False, min_value=0, max_value=100)
    rate_limit = serializers.IntegerField(required=False, min_value=0, help_text="requests per minute, 0 = unlimited")
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=600)
    settings = serializers.JSONField(required=False)
    cost_input_per_1k = serializers.DecimalField(max_digits=12, decimal_places=6, required=False, allow_null=True)
    cost_output_per_1k = serializers.DecimalField(max_digits=12, decimal_places=6, required=False, allow_null=True)
