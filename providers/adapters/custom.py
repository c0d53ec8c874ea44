"""Any OpenAI-compatible endpoint (vLLM, LM Studio, Together, Groq, Azure-style
gateways…): the OpenAI adapter with the operator's base_url, auth header and extra
headers.

- Wire format: https://platform.openai.com/docs/api-reference/chat (as openai.py)
- vLLM's server: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html

`config.base_url` is required and includes the version prefix (`http://host:8000/v1`).
Such a server speaks OpenAI's wire, but not necessarily all of it: `settings.features`
declares what it handles (chat.py names; default: everything openai.py does), e.g.
`["chat", "streaming"]` for a text-only server, so the router never sends it tools,
images, structured output or embeddings it would reject or silently ignore.
A user's own provider class is not built here: a `custom` config whose settings name
`{"factory": "<name>"}` is built by the factory registered under that name
(providers/registry.py, AXONFLOW_PROVIDER_FACTORIES).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from providers.adapters import openai
from providers.adapters.base import (
    ALL_FEATURES,
    CHAT,
    IMAGE_URLS,
    IMAGES,
    JSON_MODE,
    JSON_SCHEMA,
    PARALLEL_TOOL_CALLS,
    STREAMING,
    TOOLS,
    invalid_setting,
)
from providers.adapters.http import check_setting_names

if TYPE_CHECKING:
    from providers.models import ProviderConfig

# RFC 9110 token characters for header names.
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# Headers the HTTP client owns: the host and framing, and the hop-by-hop headers of
# RFC 9110 §7.6.1 (plus Proxy-*). Letting settings set them would corrupt the request or
# steer it past the egress guard (a Host header for another virtual host, a smuggled body).
RESERVED_HEADERS = {
    "host", "content-length", "transfer-encoding", "connection", "content-type", "keep-alive", "te", "trailer",
    "upgrade",
}  # fmt: skip
RESERVED_PREFIXES = ("proxy-",)
DEFAULT_AUTH_HEADER = "Authorization"
DEFAULT_AUTH_SCHEME = "Bearer"
# A feature that only makes sense with another one (there are no tools to call in
# parallel without tools, no images by URL without images, no streamed tools without chat…).
FEATURE_NEEDS = {
    STREAMING: CHAT, TOOLS: CHAT, IMAGES: CHAT, JSON_MODE: CHAT, JSON_SCHEMA: CHAT,
    PARALLEL_TOOL_CALLS: TOOLS, IMAGE_URLS: IMAGES,
}  # fmt: skip


def _header_name(name: Any, what: str) -> str:
    if (
        not isinstance(name, str)
        or not HEADER_NAME_RE.match(name)
        or name.lower() in RESERVED_HEADERS
        or name.lower().startswith(RESERVED_PREFIXES)
    ):
        raise invalid_setting(f"settings.{what} must be a valid, non-reserved HTTP header name.")
    return name


def _header_value(value: Any, what: str) -> str:
    if not isinstance(value, str) or "\r" in value or "\n" in value or len(value) > 4000:
        raise invalid_setting(f"settings.{what} must be a single-line string.")
    return value


def _features(value: Any) -> frozenset[str]:
    """The declared features: a non-empty list of chat.py names, each with what it needs."""
    if value is None:
        return openai.FEATURES
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
        raise invalid_setting("settings.features must be a non-empty list of feature names.")
    features = frozenset(value)
    unknown = sorted(features - ALL_FEATURES)
    if unknown:
        known = ", ".join(sorted(ALL_FEATURES))
        raise invalid_setting(f"settings.features: {unknown[0][:40]!r} is not a feature (known: {known}).")
    for name in sorted(features):
        needed = FEATURE_NEEDS.get(name)
        if needed and needed not in features:
            raise invalid_setting(f"settings.features: {name!r} needs {needed!r}.")
    return features


@dataclass(frozen=True, slots=True)
class Settings(openai.Settings):
    """openai's settings plus `headers` ({name: value}, sent on every request),
    `auth_header` (default Authorization) and `auth_scheme` (default Bearer; "" sends
    the bare key, as `api-key: <key>` gateways expect), `health_path` (default
    /models) and `features` (what the server handles, see above). `max_tokens` is sent
    as `max_tokens`, which every compatible server knows."""

    max_tokens_field: str = "max_tokens"
    headers: tuple[tuple[str, str], ...] = field(default=())
    auth_header: str = DEFAULT_AUTH_HEADER
    auth_scheme: str = DEFAULT_AUTH_SCHEME
    health_path: str = openai.MODELS_PATH
    features: frozenset[str] = openai.FEATURES

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        """Raises InvalidConfig naming the bad field (or a key it does not know)."""
        check_setting_names(raw, {f.name for f in fields(cls)})
        extra = raw.get("headers")
        extra = {} if extra is None else extra
        if not isinstance(extra, dict):
            raise invalid_setting("settings.headers must be an object of header names to values.")
        headers = tuple((_header_name(k, "headers"), _header_value(v, f"headers.{k}")) for k, v in extra.items())
        scheme = raw.get("auth_scheme", DEFAULT_AUTH_SCHEME)
        if not isinstance(scheme, str) or not re.fullmatch(r"[A-Za-z0-9_-]{0,40}", scheme):
            raise invalid_setting("settings.auth_scheme must be a word such as Bearer, or empty.")
        health_path = raw.get("health_path", openai.MODELS_PATH)
        if not isinstance(health_path, str) or not re.fullmatch(r"/[A-Za-z0-9._~/-]{0,200}", health_path):
            raise invalid_setting("settings.health_path must be a path starting with /.")
        return cls(
            **cls.parse_fields(raw),
            headers=headers,
            auth_header=_header_name(raw.get("auth_header", DEFAULT_AUTH_HEADER), "auth_header"),
            auth_scheme=scheme,
            health_path=health_path,
            features=_features(raw.get("features")),
        )


class CustomProvider(openai.OpenAIProvider):
    """An OpenAI-compatible server at the configured base_url."""

    type = "custom"
    settings_class = Settings
    default_base_url = None  # there is no public default; base_url is required

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        # What this server was declared to handle (a factory's subclass inherits it).
        self.features = self.settings.features
        self.supports_streaming = STREAMING in self.features

    def extra_headers(self) -> dict[str, str]:
        return dict(self.settings.headers)

    def credential_header(self, key: str) -> tuple[str, str]:
        s: Settings = self.settings
        return s.auth_header, f"{s.auth_scheme} {key}" if s.auth_scheme else key

    @property
    def models_path(self) -> str:
        return self.settings.health_path
