"""The last line of defence for logs: credential-shaped text never reaches a log line.

The code scrubs what it knows (providers.secrets.scrub removes every resolved key and
these shapes from provider messages before they are logged or stored); this catches
what slips past, whatever logger it comes from:

    ScrubbingFormatter   every handler in settings.LOGGING: the finished line (message,
                         arguments, exception and stack text) is scrubbed, and the record
                         itself is left alone for any other handler
    ScrubSecretsFilter   loggers whose handlers we do not build (uvicorn installs its own
                         when it starts): scrubs the record in place

Self-contained (imports nothing of ours), so settings can name it before apps load.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[REDACTED]"

# (pattern, replacement): a replacement keeps the label ("x-api-key: ") and drops the value.
SECRET_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # Header-like "name: value" / "name=value", in plain text, dict reprs and JSON.
    (
        re.compile(
            r"(?i)(\b(?:x-api-key|x-goog-api-key|api-key|authorization|proxy-authorization|cookie)"
            r"[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"
        ),
        r"\1" + REDACTED,
    ),
    # key=… in URLs and query strings (Gemini's ?key=AIza…, access_token=…).
    (
        re.compile(r"(?i)([?&;](?:key|api_key|apikey|api-key|access_token|token|secret|password|sig)=)[^&\s#\"']+"),
        r"\1" + REDACTED,
    ),
    # Secret-named fields with a quoted value: {'api_key': '…'}, "password": "…".
    (
        re.compile(
            r"(?i)([\"']?\b(?:api_key|apikey|secret|secret_key|client_secret|password|passwd|access_token"
            r"|refresh_token|aws_secret_access_key|aws_session_token)[\"']?\s*[:=]\s*[\"'])[^\"']+"
        ),
        r"\1" + REDACTED,
    ),
    # An AWS secret access key: 40 base64 characters after an aws_secret… label.
    (re.compile(r"(?i)(aws_?secret\w*[\"']?\s*[:=]?\s*[\"']?)[A-Za-z0-9/+=]{40}\b"), r"\1" + REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"), "Bearer " + REDACTED),
    (re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}"), REDACTED),  # OpenAI, Anthropic
    # Our API tokens (the 8-character prefix the audit log shows is shorter).
    (re.compile(r"\baxf_[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),  # Google API keys
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
]


def scrub(text: str) -> str:
    """Return `text` with every credential shape in SECRET_SHAPES replaced by [REDACTED]."""
    for pattern, replacement in SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose output is scrubbed. Everything a handler writes goes through
    format(), the traceback and stack text included."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class ScrubSecretsFilter(logging.Filter):
    """Scrub a record in place: its message and arguments, its exception and stack text.
    A clean record is left as it was; otherwise each string argument is scrubbed in its
    place (formatters that unpack `args`, like uvicorn's access log, keep working), or,
    when a secret spans the format string and an argument ("x-api-key: %s"), the message
    is merged and scrubbed whole. Never drops a record."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself at emit time
            return True
        clean = scrub(message)
        if clean != message:
            self._scrub_message(record, clean)
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            text = scrub(record.exc_text)
            if text != record.exc_text:
                # The exception object itself would still carry the secret to a handler
                # that formats exc_info anew; keep only the scrubbed text.
                record.exc_text, record.exc_info = text, None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True

    @staticmethod
    def _scrub_message(record: logging.LogRecord, merged_clean: str) -> None:
        msg, args = record.msg, record.args
        if isinstance(msg, str):
            record.msg = scrub(msg)
        if isinstance(args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: scrub(v) if isinstance(v, str) else v for k, v in args.items()}
        try:
            piecewise = record.getMessage()
        except Exception:
            piecewise = ""
        if not piecewise or scrub(piecewise) != piecewise:
            record.msg, record.args = merged_clean, None


class JsonScrubbingFormatter(ScrubbingFormatter):
    """LOG_FORMAT=json: one JSON object a line, by python-json-logger, scrubbed whole:
    timestamp (ISO 8601, UTC), level, logger, message, request_id, tenant, provider (from
    axonflow_site.context.RequestFields), exc_info when there is one, and any `extra`."""

    def __init__(self) -> None:
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        super().__init__()
        self.json = JsonFormatter(
            "{levelname}{name}{message}{request_id}{tenant}{provider}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's coloured copy of the message
        )

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.json.format(record))
