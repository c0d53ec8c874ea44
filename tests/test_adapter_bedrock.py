"""The Bedrock adapter against the fake upstream on 127.0.0.1 (which checks SigV4 and
speaks the binary AWS event stream), and its pure wire functions. Tools, images, JSON
output and embeddings: tests/test_adapter_bedrock_tools.py."""

from __future__ import annotations

import json
import logging
import re
from decimal import Decimal

import aiohttp
import pytest
import yarl
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from axonflow_site.errors import InvalidConfig
from providers.adapters import aws, bedrock, bedrock_converse
from providers.adapters.base import CompletionRequest, MalformedResponse, Message, ProviderError
from providers.adapters.http import Clocks
from providers.fake_upstream import bedrock as fake_bedrock
from providers.pricing import actual_cost
from tenants.models import Tenant
from tests.fixtures_upstream import adapter_for, assert_stream_matches_completion, stream_until_error

pytestmark = pytest.mark.usefixtures("http_session")

ACCESS_KEY, SECRET = next(iter(fake_bedrock.TEST_CREDENTIALS.items()))
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>\w+)/(?P<date>\d{8})/us-east-1/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}$"
)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path, settings):
    """Test credentials in the environment; no shared files, no instance metadata. The
    configs belong to `acme`, which may use the server's credentials (the chain)."""
    settings.AXONFLOW_AMBIENT_AWS_TENANTS = ["acme"]
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws.forget_credentials()
    yield monkeypatch
    aws.forget_credentials()


def make(upstream, label: str = "br", key: str = "", **fields) -> bedrock.BedrockProvider:
    fields = {"model": MODEL, "region": "us-east-1", "tenant": Tenant(slug="acme"), **fields}
    return adapter_for(upstream, "bedrock", label, key, **fields)


def request(**fields) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", "Why is the sky blue?")], **fields)


# --- against the fake upstream --------------------------------------------------------


async def test_it_completes_a_prompt_with_the_documented_request(upstream):
    response = await make(upstream).complete(
        request(system="Be brief.", max_tokens=64, temperature=0.2, top_p=0.9, stop=["##"])
    )

    assert response.content == "Echo: Why is the sky blue?"
    assert response.model == MODEL
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    sent = upstream.last("br")
    assert (sent.method, sent.path) == ("POST", f"/br/model/{MODEL}/converse")
    assert sent.body == {
        "messages": [{"role": "user", "content": [{"text": "Why is the sky blue?"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["##"]},
    }
    assert sent.headers["content-type"] == "application/json"


async def test_requests_carry_a_sigv4_signature_over_host_date_and_body(upstream):
    await make(upstream).complete(request())

    sent = upstream.last("br")
    auth = AUTH.match(sent.headers["authorization"])
    assert auth, sent.headers["authorization"]
    assert auth["key"] == ACCESS_KEY
    assert {"host", "x-amz-date", "content-type"} <= set(auth["signed"].split(";"))
    assert re.fullmatch(r"\d{8}T\d{6}Z", sent.headers["x-amz-date"])
    assert auth["date"] == sent.headers["x-amz-date"][:8]
    assert SECRET not in json.dumps(sent.headers)


async def test_the_fake_accepts_the_signed_body_and_rejects_any_other(upstream):
    # The fake recomputes the signature for TEST_CREDENTIALS, so every successful call
    # in this file proves the adapter signed exactly the bytes and path it sent.
    url = upstream.base_url("br", "bedrock") + "/model/" + MODEL.replace(":", "%3A") + "/converse"
    signed_body = json.dumps(bedrock_converse.to_wire(request())).encode()
    credentials = Credentials(ACCESS_KEY, SECRET)
    content_type = {"Content-Type": "application/json"}
    headers = aws.sign("POST", url, signed_body, content_type, credentials, "bedrock", "us-east-1")
    statuses = []
    async with aiohttp.ClientSession() as session:
        for body in (signed_body, signed_body.replace(b"sky", b"sea")):
            async with session.post(yarl.URL(url, encoded=True), data=body, headers=headers) as response:
                statuses.append((response.status, response.headers.get("x-amzn-ErrorType")))

    assert statuses == [(200, None), (403, "InvalidSignatureException")]


async def test_a_wrong_secret_is_a_signature_error_that_fails_over(upstream, aws_env):
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-key-0000000000000000")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.status_code == 403 and caught.value.retryable  # the credentials, not the request
    assert caught.value.message.startswith("InvalidSignatureException: ")
    assert "not-the-right-secret" not in caught.value.message


async def test_model_arns_are_percent_encoded_and_signed_as_sent(upstream):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
    response = await make(upstream, model=arn).complete(request())

    assert response.content == "Echo: Why is the sky blue?"
    assert upstream.last("br").path.endswith("/converse")


async def test_a_session_token_is_sent_and_signed(upstream, aws_env):
    aws_env.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEFAKEsessiontoken")
    await make(upstream).complete(request())

    sent = upstream.last("br")
    assert sent.headers["x-amz-security-token"] == "FwoGZXIvYXdzEFAKEsessiontoken"
    assert "x-amz-security-token" in AUTH.match(sent.headers["authorization"])["signed"]


async def test_explicit_keys_from_settings_take_precedence_over_the_chain(upstream, aws_env):
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    provider = make(upstream, key=SECRET, settings={"aws_access_key_id": ACCESS_KEY})
    await provider.complete(request())

    assert AUTH.match(upstream.last("br").headers["authorization"])["key"] == ACCESS_KEY


async def test_an_access_key_without_its_secret_fails_over(upstream):
    with pytest.raises(ProviderError) as caught:
        await make(upstream, settings={"aws_access_key_id": ACCESS_KEY}).complete(request())

    assert caught.value.retryable
    assert "secret key" in caught.value.message
    assert upstream.requests("br") == []


async def test_missing_credentials_fail_over_with_a_clear_message(upstream, aws_env):
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.retryable
    assert "no AWS credentials found" in caught.value.message


async def test_a_stream_assembles_into_the_same_text(upstream):
    await assert_stream_matches_completion(make(upstream), request())

    sent = upstream.last("br")
    assert sent.path == f"/br/model/{MODEL}/converse-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert AUTH.match(sent.headers["authorization"])


async def test_usage_is_priced_from_the_table(upstream):
    provider = make(upstream)
    usage = (await provider.complete(request())).usage
    price_in, price_out = Decimal("0.003"), Decimal("0.015")  # anthropic.claude-3-5-sonnet in pricing.py

    expected = (price_in * usage.prompt_tokens + price_out * usage.completion_tokens) / 1000
    assert actual_cost(provider.config, usage, MODEL) == expected.quantize(Decimal("0.00000001"))
    assert expected > 0


@pytest.mark.parametrize(
    ("kind", "retryable", "error_type"),
    [
        ("429", True, "ThrottlingException"),
        ("500", True, "InternalServerException"),
        ("503", True, "ServiceUnavailableException"),
        ("400", False, "ValidationException"),
        ("403", True, "AccessDeniedException"),
        ("404", False, "ResourceNotFoundException"),
    ],
)
async def test_aws_errors_map_to_retryable_or_final(upstream, kind, retryable, error_type):
    upstream.configure("br", failure_kind=kind, fail_next=1, error_message="something went wrong")
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    assert caught.value.status_code == int(kind)
    assert caught.value.retryable is retryable
    assert caught.value.message == f"{error_type}: something went wrong"


async def test_the_converse_validation_error_is_final(upstream):
    req = CompletionRequest(messages=[Message("assistant", "I start."), Message("user", "Hi")])
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(req)

    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert caught.value.message.startswith("ValidationException: A conversation must start with a user message")


async def test_a_stream_exception_event_is_retryable_and_not_a_short_answer(upstream):
    upstream.configure("br", failure_kind="stream_error", fail_next=1, cut_after=3)
    error, received = await stream_until_error(make(upstream).stream(request()))

    assert error.retryable and error.status_code == 424
    assert error.message == "modelStreamErrorException: The model stream failed."
    assert received and all(c.finish_reason is None for c in received)


async def test_the_health_probe_is_a_signed_model_list(upstream):
    probe = await make(upstream).health_check()

    assert probe.ok and probe.status_code == 200
    sent = upstream.last("br")
    assert (sent.method, sent.path, sent.query) == ("GET", "/br/foundation-models", {"byOutputModality": "TEXT"})
    assert AUTH.match(sent.headers["authorization"])
    assert upstream.counts("br")["probe"] == 1


async def test_the_converse_health_probe_asks_for_one_token(upstream):
    probe = await make(upstream, settings={"health_probe": "converse"}).health_check()

    assert probe.ok
    assert upstream.last("br").body["inferenceConfig"] == {"maxTokens": 1}


async def test_the_health_probe_reports_denied_access(upstream):
    upstream.configure("br", failure_kind="403", fail_next=1)
    probe = await make(upstream).health_check()

    assert not probe.ok and probe.status_code == 403
    assert probe.error.startswith("AccessDeniedException")


async def test_credentials_never_reach_exceptions_or_logs(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.configure("br", failure_kind="echo_key", fail_next=1)
    with pytest.raises(ProviderError) as caught:
        await make(upstream).complete(request())

    # The fake echoes the Authorization header, which names the access key id.
    assert ACCESS_KEY not in caught.value.message and SECRET not in caught.value.message
    assert SECRET not in caplog.text


def test_building_without_botocore_is_invalid_config(upstream, monkeypatch):
    monkeypatch.setattr(aws, "HAVE_BOTOCORE", False)
    with pytest.raises(InvalidConfig) as caught:
        make(upstream)

    assert "pip install 'axonflow[bedrock]'" in caught.value.message


# --- the event stream ---------------------------------------------------------------


def test_the_fakes_frames_decode_with_botocore():
    buffer = EventStreamBuffer()
    buffer.add_data(fake_bedrock.event_frame("contentBlockDelta", {"delta": {"text": "Hé"}}))
    buffer.add_data(fake_bedrock.exception_frame("throttlingException", "slow down"))
    event, exception = list(buffer)

    assert event.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(event.payload)["delta"] == {"text": "Hé"}
    assert exception.headers[":exception-type"] == "throttlingException"
    assert json.loads(exception.payload) == {"message": "slow down"}


async def _chunks(*frames: bytes, split: int = 7):
    data = b"".join(frames)
    for i in range(0, len(data), split):  # frames straddle network reads
        yield data[i : i + split]


async def _parse(*frames: bytes) -> list:
    decoded = aws.decode_frames(_chunks(*frames), "br")
    return [chunk async for chunk in bedrock.parse_stream(decoded, MODEL, "br")]


async def test_parse_stream_joins_deltas_and_reports_reason_and_usage():
    chunks = await _parse(
        fake_bedrock.event_frame("messageStart", {"role": "assistant"}),
        fake_bedrock.event_frame("contentBlockDelta", {"delta": {"text": "Hel"}}),
        fake_bedrock.event_frame("contentBlockDelta", {"delta": {"text": "lo"}}),
        fake_bedrock.event_frame("messageStop", {"stopReason": "max_tokens"}),
        fake_bedrock.event_frame("metadata", {"usage": {"inputTokens": 5, "outputTokens": 2}}),
    )

    assert "".join(c.delta for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "length"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 2)


@pytest.mark.parametrize(
    ("exception", "retryable"),
    [("throttlingException", True), ("serviceUnavailableException", True), ("validationException", False)],
)
async def test_stream_exceptions_map_to_retryable_or_final(exception, retryable):
    with pytest.raises(ProviderError) as caught:
        await _parse(fake_bedrock.exception_frame(exception, "nope"))

    assert caught.value.retryable is retryable


async def test_a_stream_without_message_stop_is_malformed():
    with pytest.raises(MalformedResponse):
        await _parse(fake_bedrock.event_frame("contentBlockDelta", {"delta": {"text": "Hel"}}))


async def test_a_corrupted_frame_is_malformed():
    frame = bytearray(fake_bedrock.event_frame("contentBlockDelta", {"delta": {"text": "Hel"}}))
    frame[-6] ^= 0xFF
    with pytest.raises(MalformedResponse):
        await _parse(bytes(frame))


# --- pure functions ------------------------------------------------------------------


def test_to_wire_moves_system_messages_and_merges_repeated_turns():
    req = CompletionRequest(
        messages=[Message("system", "Answer in French."), Message("user", "Hi"), Message("user", "Still there?")],
        system="Be brief.",
    )

    assert bedrock_converse.to_wire(req) == {
        "messages": [{"role": "user", "content": [{"text": "Hi"}, {"text": "Still there?"}]}],
        "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
    }


def test_from_wire_reads_the_documented_response():
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Blue "}, {"text": "light."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15},
        "metrics": {"latencyMs": 80},
    }
    response = bedrock.from_wire(body, MODEL)

    assert (response.content, response.model, response.finish_reason) == ("Blue light.", MODEL, "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 3)


@pytest.mark.parametrize("body", [[], {"output": {}}, {"output": {"message": {"content": "x"}}}])
def test_from_wire_rejects_bodies_without_an_output_message(body):
    with pytest.raises(MalformedResponse):
        bedrock.from_wire(body)


def test_the_error_type_header_decides_retryability_and_drops_its_namespace():
    call = bedrock.BedrockCall("br", Clocks.for_timeout(5))
    header = {"x-amzn-ErrorType": "ModelNotReadyException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    error = call.error_for(429, b'{"message": "Model is loading"}', header)

    assert error.retryable and error.message == "ModelNotReadyException: Model is loading"


def test_an_expired_token_forgets_the_cached_credentials():
    aws._chain["cached"] = object()
    call = bedrock.BedrockCall("br", Clocks.for_timeout(5))
    error = call.error_for(403, b'{"message": "expired"}', {"x-amzn-ErrorType": "ExpiredTokenException"})

    assert error.retryable  # another provider may still answer (SPEC §2 rule 4)
    assert aws._chain == {}


@pytest.mark.parametrize(
    "raw",
    [
        {"aws_access_key_id": 5},
        {"profile": ["a"]},
        {"health_probe": "invoke"},
        {"embedding_model": 5},
        {"embedding_model": "amazon.nova-lite-v1:0"},
    ],
)
def test_bad_settings_are_invalid_config(raw):
    with pytest.raises(InvalidConfig):
        bedrock.Settings.parse(raw)


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "global.anthropic.claude-3-5-sonnet-20240620-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
    ],
)
def test_inference_profiles_are_priced_like_their_model(model):
    from providers.pricing import table_price

    assert table_price(model) == table_price(MODEL) == (Decimal("0.003"), Decimal("0.015"))
