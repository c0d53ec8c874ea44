"""AWS plumbing for the bedrock adapter, all through botocore (an optional dependency,
`pip install axonflow[bedrock]`): the credential chain, SigV4 signing and the
`application/vnd.amazon.eventstream` decoder.

- Credential chain: https://docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html
- SigV4: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html
- Event stream framing: https://docs.aws.amazon.com/transcribe/latest/dg/event-stream.html
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

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

# Chain credentials per profile ("" = default). botocore's refreshable credentials
# (assumed roles, instance and container roles) renew themselves when asked for a
# frozen copy close to expiry, so caching the object is enough.
_chain: dict[str, Any] = {}
_chain_lock = threading.Lock()


def _load_chain(profile: str) -> Any:
    import botocore.session

    with _chain_lock:
        if profile not in _chain:
            credentials = botocore.session.Session(profile=profile or None).get_credentials()
            if credentials is None:
                return None  # not cached: credentials provided later are picked up
            _chain[profile] = credentials
        return _chain[profile]


def forget_credentials() -> None:
    """Drop the cached chain credentials (after ExpiredToken/UnrecognizedClient; tests)."""
    with _chain_lock:
        _chain.clear()


async def frozen_credentials(profile: str, access_key_id: str, secret: str, provider: str) -> Any:
    """Explicit keys when `access_key_id` is given, else the chain's current credentials.

    The chain is resolved (and refreshed) off the event loop, since it may read files or
    call the instance metadata service. Raises a retryable ProviderError when nothing is
    found, so the router fails over to a provider that is configured."""
    if access_key_id:
        if not secret:
            raise ProviderError(provider, None, "aws_access_key_id is set but the secret key (api_key) is not", True)
        return Credentials(access_key_id, secret).get_frozen_credentials()
    credentials = _chain.get(profile) or await asyncio.to_thread(_load_chain, profile)
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
