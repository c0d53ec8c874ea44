"""The REST API's JSON parser: DRF's, except that a body nested more than MAX_JSON_DEPTH
levels deep is bad input like any other, a 400 `validation_error`, refused by a quick
scan before the parser sees it (so it is neither slow nor a RecursionError, a 500).
`/v1` uses the same scan (routing/v1/wire.py)."""

from __future__ import annotations

import io
import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# A chat body is 4 deep, a tool's JSON schema 10 or so; 100 is still fine, and Python's
# own parser would fail (RecursionError) near 1,000.
MAX_JSON_DEPTH = 128
_BRACKET_OR_QUOTE = re.compile(rb'[\[\]{}"]')
_OPENERS = frozenset(b"[{")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def _string_end(raw: bytes, start: int) -> int:
    """The index of the quote closing the string opened at `start`, or -1. Linear: each
    quote is looked at once, each run of backslashes before one counted once."""
    end = start
    while (end := raw.find(b'"', end + 1)) >= 0:
        escape = end - 1
        while raw[escape] == _BACKSLASH:
            escape -= 1
        if (end - 1 - escape) % 2 == 0:  # an even number of backslashes: not escaped
            return end
    return -1


def nested_too_deeply(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text `raw` opens more than `limit` arrays or objects inside one
    another (brackets inside strings do not count). Stops at the first bracket past the
    limit; a body with at most `limit` brackets in all is answered from two byte counts
    (the common case, a few µs). Not a validator: text that is not JSON may pass."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth, position = 0, 0
    while (found := _BRACKET_OR_QUOTE.search(raw, position)) is not None:
        at = found.start()
        char = raw[at]
        if char == _QUOTE:
            at = _string_end(raw, at)
            if at < 0:
                return False  # an unterminated string: the parser refuses the text anyway
        elif char in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
        position = at + 1
    return False


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read()
        if nested_too_deeply(raw):
            raise ParseError(f"JSON parse error - the body is nested more than {MAX_JSON_DEPTH} levels deep.")
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # a backstop: the scan above refuses such bodies first
            raise ParseError("JSON parse error - the body is nested too deeply.") from None

