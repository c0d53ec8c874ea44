"""`python manage.py fake_upstream`: serve the fake LLM upstream for the demo and benchmarks.

Every provider's wire format is served under any label prefix (see
providers/fake_upstream/core.py); the flags set the defaults of every label, and
POST /_control/{label} changes one label while it runs.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from django.core.management.base import BaseCommand, CommandError

from providers.fake_upstream.core import Behaviour, make_app


class Command(BaseCommand):
    help = "Serve the fake LLM upstream (OpenAI, Anthropic, Ollama, Gemini, Bedrock wire formats)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
        parser.add_argument("--failure-rate", type=float, default=0.0, help="0..1, per request")
        parser.add_argument(
            "--failure-kind",
            default="500",
            help="a status (500, 429…), timeout, reset, malformed, missing_fields, cut, no_end, stall, drip…",
        )
        parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks")
        parser.add_argument("--reply", default=None, help="fixed reply text (default: echo the prompt)")
        parser.add_argument(
            "--backlog", type=int, default=1024,
            help="listen queue length; a gateway opening hundreds of connections at once overflows aiohttp's 128",
        )  # fmt: skip

    def handle(self, *args, **opts):
        try:
            defaults = Behaviour.from_dict(
                {
                    "latency_ms": opts["latency_ms"],
                    "failure_rate": opts["failure_rate"],
                    "failure_kind": opts["failure_kind"],
                    "chunk_delay_ms": opts["chunk_delay_ms"],
                    "reply": opts["reply"],
                }
            )
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        try:
            import uvloop  # the fake must never be a benchmark's bottleneck

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self.stdout.write(f"fake upstream on http://{opts['host']}:{opts['port']} (control: /_control/)")
        web.run_app(
            make_app(defaults),
            host=opts["host"],
            port=opts["port"],
            access_log=None,
            backlog=opts["backlog"],
            handler_cancellation=True,
            print=None,
            loop=loop,
        )
