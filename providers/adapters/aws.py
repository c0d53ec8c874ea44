"""AWS plumbing for the bedrock adapter, all through botocore (an optional dependency,
`pip install axonflow[bedrock]`): the credential chain, SigV4 signing and the
`application/vnd.amazon.eventstream` decoder.

The server's own credential chain ("ambient" credentials: its environment, shared
config, container or instance role) serves only the tenants the operator lists in
AXONFLOW_AMBIENT_AWS_TENANTS (SPEC §6); every other tenant brings explicit keys.

- Credential chain: https://docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html
- SigV4: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html
- Event stream framing: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.conf import settings

from axonflow_site.errors import InvalidConfig
from providers import secrets
from providers.adapters.base import MalformedResponse, ProviderError

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.eventstream import EventStreamBuffer, ParserError

    HAVE_BOTOCORE = True
except ImportError:  # pragma: no cover - exercised only without the extra installed
    HAVE_BOTOCORE = False

Frame = tuple[Mapping[str, Any], bytes]
AMBIENT = "AXONFLOW_AMBIENT_AWS_TENANTS"

# The chain's credentials, under "" (the server's default chain; there are no per-tenant
# profiles). botocore's refreshable credentials (assumed roles, instance and container
# roles) renew themselves when asked for a frozen copy close to expiry, so caching the
# object is enough.
_chain: dict[str, Any] = {}
_chain_lock = threading.Lock()


def ambient_allowed(tenant: str) -> bool:
    """Whether tenant `tenant` (a slug) may use the server's credential chain."""
    return bool(tenant) and tenant in settings.AXONFLOW_AMBIENT_AWS_TENANTS


def check_ambient(tenant: str) -> None:
    """For saving a config without explicit keys: raise InvalidConfig (naming the
    setting) unless the tenant may use the server's credentials."""
    if not ambient_allowed(tenant):
        raise InvalidConfig(
            f"Bedrock without settings.aws_access_key_id uses the server's AWS credentials, which this "
            f"tenant may not use ({AMBIENT}). Give settings.aws_access_key_id and the secret access key "
            "as the API key or secret_ref.",
            {"field": "settings", "setting": "aws_access_key_id"},
        )


def _load_chain() -> Any:
    import botocore.session

    with _chain_lock:
        if "" not in _chain:
            credentials = botocore.session.Session().get_credentials()
            if credentials is None:
                return None  # not cached: credentials provided later are picked up
            _chain[""] = credentials
        return _chain[""]


def forget_credentials() -> None:
    """Drop the cached chain credentials (after ExpiredToken/UnrecognizedClient; tests)."""
    with _chain_lock:
        _chain.clear()


async def frozen_credentials(access_key_id: str, secret: str, provider: str, tenant: str) -> Any:
    """Explicit keys when `access_key_id` is given, else the chain's current credentials,
    for a tenant named in AXONFLOW_AMBIENT_AWS_TENANTS only.

    The chain is resolved (and refreshed) off the event loop, since it may read files or
    call the instance metadata service. Raises a retryable ProviderError when nothing is
    found or the tenant may not use it, so the router fails over to another provider."""
    if access_key_id:
        if not secret:
            raise ProviderError(provider, None, "aws_access_key_id is set but the secret key (api_key) is not", True)
        return Credentials(access_key_id, secret).get_frozen_credentials()
    if not ambient_allowed(tenant):
        message = f"no aws_access_key_id, and this tenant may not use the server's AWS credentials ({AMBIENT})"
        raise ProviderError(provider, None, message, True)
    credentials = _chain.get("") or await asyncio.to_thread(_load_chain)
    if credentials is None:
        raise ProviderError(provider, None, "no AWS credentials found (environment, profile or instance role)", True)
    needs_refresh = getattr(credentials, "refresh_needed", None)
    if needs_refresh is not None and needs_refresh():
        frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
    else:
        frozen = credentials.get_frozen_credentials()
    secrets.remember(frozen.secret_key)
    if frozen.token:
        secrets.remember(frozen.token)
    return frozen


def sign(
    method: str, url: str, body: bytes, headers: Mapping[str, str], credentials: Any, service: str, region: str
) -> dict[str, str]:
    """`headers` plus SigV4 `Authorization`, `X-Amz-Date` (and `X-Amz-Security-Token`
    for temporary credentials), over exactly these bytes and this percent-encoded URL.
    The caller must send the URL unchanged (yarl.URL(url, encoded=True))."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


async def decode_frames(chunks: AsyncIterator[bytes], provider: str) -> AsyncIterator[Frame]:
    """(headers, payload) for each event-stream message, however the frames straddle
    reads. A bad CRC or length raises MalformedResponse."""
    buffer = EventStreamBuffer()
    async for chunk in chunks:
        buffer.add_data(chunk)
        try:
            messages = list(buffer)
        except ParserError as exc:
            raise MalformedResponse(provider, f"bad event stream frame: {type(exc).__name__}") from None
        for message in messages:
            yield message.headers, message.payload
