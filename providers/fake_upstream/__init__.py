"""A fake LLM upstream speaking every provider's wire format (see core.py for the
handler contract, control.py for the HTTP control API, runner.py for the in-process
harness used by tests)."""

from providers.fake_upstream.core import Behaviour, FakeRequest, Recorded, Route, make_app
from providers.fake_upstream.runner import FakeUpstream

__all__ = ["Behaviour", "FakeRequest", "FakeUpstream", "Recorded", "Route", "make_app"]
