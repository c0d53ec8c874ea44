"""Logs never carry a credential (axonflow_site/logfilter.py): each secret shape, in a
message, in its arguments, in an exception's text, is scrubbed from what every
configured handler writes."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest
from django.conf import settings

from axonflow_site.logfilter import REDACTED, ScrubbingFormatter, ScrubSecretsFilter, scrub

# (text containing a secret, the secret itself)
SHAPES = [
    ("calling with sk-proj-Abc123def456ghi789jkl", "sk-proj-Abc123def456ghi789jkl"),
    ("calling with sk-ant-api03-Zyx987wvu654tsr321", "sk-ant-api03-Zyx987wvu654tsr321"),
    ("token axf_q2W3e4R5t6Y7u8I9o0PaSdFgHjKl was used", "axf_q2W3e4R5t6Y7u8I9o0PaSdFgHjKl"),
    ("key id AKIAIOSFODNN7EXAMPLE in the chain", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary ASIAIOSFODNN7EXAMPLE too", "ASIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("{'aws_secret_access_key': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}", "wJalrXUtnFEMI/K7MDENG"),
    ("Authorization: Bearer opaque.token-value_42", "opaque.token-value_42"),
    ("sent bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("headers {'x-api-key': 'anthropic-opaque-0123456789'}", "anthropic-opaque-0123456789"),
    ("x-api-key: opaque-0123456789abcdef", "opaque-0123456789abcdef"),
    ("x-goog-api-key: opaque-goog-0123456789", "opaque-goog-0123456789"),
    ("GET https://example.com/v1beta/models?key=AIzaSyA-1234567890abcdefghijklmnopqrs&alt=sse", "AIzaSyA-1234"),
    ("GET /models?alt=sse&key=plain-opaque-key-123", "plain-opaque-key-123"),
    ("google key AIzaSyA-1234567890abcdefghijklmnopqrs alone", "AIzaSyA-1234567890"),
    ('{"api_key": "opaque-json-key-987654"}', "opaque-json-key-987654"),
    ("password='hunter2-long-enough'", "hunter2-long-enough"),
    ("Cookie: sessionid=abcdef0123456789; csrftoken=zyx987", "abcdef0123456789"),
]


@pytest.mark.parametrize("text, secret", SHAPES)
def test_scrub_removes_each_shape(text, secret):
    clean = scrub(text)
    assert secret not in clean and REDACTED in clean


@pytest.mark.parametrize(
    "text",
    [
        "provider openai-demo answered 200 in 12.5 ms",
        "usage: prompt_tokens=12 completion_tokens=30 total_tokens=42",
        "token ci-bot (axf_Ab12Cd34) revoked",  # the prefix the audit log shows is not the token
        "task-scheduler-1234567 started",
        "secret_ref env:AXONFLOW_KEY_OPENAI refused",
    ],
)
def test_scrub_leaves_ordinary_lines_alone(text):
    assert scrub(text) == text


def record(msg, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("axonflow.test", logging.ERROR, __file__, 1, msg, args or None, exc_info)


def exc_info_with(text: str):
    try:
        raise RuntimeError(f"upstream said: {text}")
    except RuntimeError:
        import sys

        return sys.exc_info()


def formatted(rec: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(rec)


@pytest.mark.parametrize("text, secret", SHAPES)
def test_the_filter_scrubs_a_secret_in_the_message(text, secret):
    rec = record(text)
    assert ScrubSecretsFilter().filter(rec) is True
    assert secret not in formatted(rec)


@pytest.mark.parametrize("text, secret", SHAPES)
def test_the_filter_scrubs_a_secret_in_the_arguments(text, secret):
    rec = record("request failed: %s (attempt %d)", text, 2)
    ScrubSecretsFilter().filter(rec)
    out = formatted(rec)
    assert secret not in out and "(attempt 2)" in out


@pytest.mark.parametrize("text, secret", SHAPES)
def test_the_filter_scrubs_a_secret_in_an_exceptions_text(text, secret):
    rec = record("probe crashed", exc_info=exc_info_with(text))
    ScrubSecretsFilter().filter(rec)
    out = formatted(rec)
    assert secret not in out and "RuntimeError: upstream said:" in out and "Traceback" in out
    assert rec.exc_info is None  # no handler can format the raw exception again


def test_the_filter_scrubs_stack_info():
    rec = record("here")
    rec.stack_info = "Stack (most recent call last):\n  f(key='sk-abcdefgh12345678')"
    ScrubSecretsFilter().filter(rec)
    assert "sk-abcdefgh12345678" not in rec.stack_info


def test_the_filter_leaves_a_clean_record_and_its_exception_alone():
    info = exc_info_with("nothing secret")
    rec = record("fine %s", "here", exc_info=info)
    ScrubSecretsFilter().filter(rec)
    assert rec.getMessage() == "fine here" and rec.exc_info is info


@pytest.mark.parametrize("text, secret", SHAPES)
def test_the_formatter_scrubs_message_arguments_and_exception(text, secret):
    rec = record("failed: %s", text, exc_info=exc_info_with(text))
    out = ScrubbingFormatter("%(levelname)s %(message)s").format(rec)
    assert secret not in out and out.count(REDACTED) >= 2


# --- settings.LOGGING ----------------------------------------------------------------------


def test_every_configured_handler_formats_through_the_scrubbing_formatter():
    formatters = settings.LOGGING["formatters"]
    for name, handler in settings.LOGGING["handlers"].items():
        assert formatters[handler["formatter"]]["()"] == "axonflow_site.logfilter.ScrubbingFormatter", name


def test_djangos_default_handlers_are_replaced_so_its_records_reach_the_scrubbed_root():
    for name in ("django", "django.server"):
        assert settings.LOGGING["loggers"][name]["handlers"] == [] and settings.LOGGING["loggers"][name]["propagate"]
    assert logging.getLogger("django").handlers == []


def test_uvicorns_loggers_carry_the_filter_it_keeps_when_it_installs_its_handlers():
    from uvicorn.config import LOGGING_CONFIG

    for name in ("uvicorn.error", "uvicorn.access"):
        assert any(isinstance(f, ScrubSecretsFilter) for f in logging.getLogger(name).filters), name
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn.run does at start (it names only these loggers)
    try:
        for lg in loggers[1:]:
            assert any(isinstance(f, ScrubSecretsFilter) for f in lg.filters), lg.name
    finally:
        for lg, (handlers, filters, level, propagate) in zip(loggers, saved):
            lg.handlers[:], lg.filters[:], lg.level, lg.propagate = handlers, filters, level, propagate


def test_a_secret_logged_anywhere_leaves_the_configured_root_handler_scrubbed(caplog):
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h.formatter, ScrubbingFormatter)]
    stream = io.StringIO()
    # Swap the stream without setStream(), which flushes the old one: a test that ran
    # manage.py in-process may have left the handler on pytest's closed capture file.
    old, handler.stream = handler.stream, stream
    try:
        logging.getLogger("axonflow.somewhere").error(
            "upstream rejected %s", "Authorization: Bearer sk-live-0123456789abcdef",
            exc_info=exc_info_with("sk-ant-zzzz99998888"),
        )  # fmt: skip
        logging.getLogger("django.request").error("Internal Server Error: /v1/models?key=AIzaSyA-1234567890abcdefghijk")
    finally:
        handler.stream = old
    out = stream.getvalue()
    assert "upstream rejected" in out and "Internal Server Error" in out
    for secret in ("sk-live-0123456789abcdef", "sk-ant-zzzz99998888", "AIzaSyA-1234567890"):
        assert secret not in out
    # The record itself is untouched for other handlers: tests that assert code scrubs its
    # own logs (caplog) still see what the code logged.
    assert "sk-live-0123456789abcdef" in caplog.text


def test_the_filter_keeps_the_arguments_tuple_for_formatters_that_unpack_it():
    # uvicorn's AccessFormatter unpacks (client_addr, method, full_path, http_version, status_code).
    from uvicorn.logging import AccessFormatter

    rec = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/models?key=AIzaSyA-1234567890abcdefghijklmnop", "1.1", 200), None,
    )  # fmt: skip
    ScrubSecretsFilter().filter(rec)
    out = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(rec)
    assert "AIzaSyA" not in out and "/v1/models?key=" + REDACTED in out and "200" in out


def test_the_filter_merges_the_message_when_a_secret_spans_format_and_argument():
    rec = record("sending x-api-key: %s to %s", "opaque-0123456789abcdef", "anthropic")
    ScrubSecretsFilter().filter(rec)
    assert rec.args is None and "opaque-0123456789abcdef" not in rec.getMessage()
    assert rec.getMessage().endswith("to anthropic")
