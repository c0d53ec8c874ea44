"""providers/validation.py on the strings the console's forms send."""

from __future__ import annotations

import pytest

from axonflow_site.errors import ValidationFailed
from providers.validation import validate_provider_config


@pytest.mark.parametrize("value", ["٥٠", "５０", "²", "1e2", "50.0", " ", "0x10"])
def test_a_weight_that_is_not_ascii_digits_is_refused(acme, value):
    with pytest.raises(ValidationFailed) as caught:
        validate_provider_config(acme, {"weight": value}, instance=None)
    assert caught.value.details["field"] == "weight"


def test_a_weight_in_ascii_digits_is_an_integer(acme):
    assert validate_provider_config(acme, {"name": "p", "type": "openai", "model": "m", "weight": " 60 "})["weight"] == 60
