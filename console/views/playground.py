"""The playground: send a prompt, with routing options, through the router and watch
the answer stream in and the route it took, attempt by attempt (operators).

The page posts the form with fetch (static/js/playground.js) and reads server-sent
events, the events of `POST /api/v1/completions` with `stream: true` (`chunk`, then
`done` with the route, or `error` with the envelope) after one `start` event naming
the request id and where the request log will show it. The form is checked here, in
the view; the routing runs in the response body, an async iterator, on the event loop
under ASGI: `require_role` wraps sync views, and the body is what must be async. A
failure before the first chunk is therefore an `error` event too, carrying the
envelope with its attempts; its usage record is written all the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.http import urlencode

from axonflow_site import context
from axonflow_site.errors import AxonFlowError
from providers.adapters.base import CompletionRequest, Message
from providers.models import ProviderConfig
from routing import router
from routing.api.completions import SSE_HEADERS, api_events, sse
from routing.cache import get_snapshot
from routing.route import Caller
from routing.selection import RoutingOptions
from tenants.access import require_role
from tenants.models import Role

MAX_PROMPT_CHARS = 100_000


class PlaygroundForm(forms.Form):
    """The prompt, the generation options and the routing options (as the completions
    API takes them), with one optional weight override per provider (`weight_<id>`)."""

    prompt = forms.CharField(max_length=MAX_PROMPT_CHARS, strip=False, widget=forms.Textarea(attrs={"rows": 6}))
    system = forms.CharField(
        required=False, max_length=MAX_PROMPT_CHARS, strip=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    max_tokens = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    temperature = forms.FloatField(required=False, min_value=0, max_value=2)
    preferred_provider = forms.ChoiceField(required=False)
    disable_failover = forms.BooleanField(required=False)

    def __init__(self, *args, providers: list[ProviderConfig], **kwargs):
        super().__init__(*args, **kwargs)
        self.providers = providers
        self.fields["preferred_provider"].choices = [("", "none: draw by weight")] + [
            (p.name, p.name) for p in providers
        ]
        for p in providers:
            self.fields[f"weight_{p.pk}"] = forms.FloatField(
                required=False,
                min_value=0,
                max_value=100,
                label=p.name,
                widget=forms.NumberInput(attrs={"step": "any"}),
            )

    def weight_fields(self) -> list[tuple[ProviderConfig, forms.BoundField]]:
        return [(p, self[f"weight_{p.pk}"]) for p in self.providers]

    def to_route(self) -> tuple[CompletionRequest, RoutingOptions]:
        data = self.cleaned_data
        request = CompletionRequest(
            messages=[Message("user", data["prompt"])],
            system=data["system"] or None,
            max_tokens=data["max_tokens"],
            temperature=data["temperature"],
            stream=True,
        )
        weights = {p.name: data[f"weight_{p.pk}"] for p in self.providers if data[f"weight_{p.pk}"] is not None}
        return request, RoutingOptions(data["preferred_provider"] or None, weights, data["disable_failover"])


@require_role(Role.OPERATOR)
def playground(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: 400 with the envelope for a bad form, else the event stream."""
    providers = list(ProviderConfig.objects.for_tenant(request.tenant).order_by("-priority", "name"))
    form = PlaygroundForm(request.POST if request.method == "POST" else None, providers=providers)
    if request.method != "POST":
        return render(request, "console/playground.html", {"form": form, "providers": providers})
    if not form.is_valid():
        fields = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
        message = "; ".join(f"{form[n].label if n in form.fields else n}: {e[0]}" for n, e in fields.items())
        body = {"error": {"code": "validation_error", "message": message, "details": {"fields": fields}}}
        return JsonResponse(body, status=400)
    completion, options = form.to_route()
    request_id = context.request_id()
    log_url = f"{reverse('console:requests')}?{urlencode({'request_id': request_id})}"
    return StreamingHttpResponse(
        route_events(request.tenant.pk, request_id, log_url, completion, options),
        content_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Request-Id": request_id},
    )


async def route_events(
    tenant_id: int, request_id: str, log_url: str, completion: CompletionRequest, options: RoutingOptions
) -> AsyncIterator[bytes]:
    """`start`, then the completions API's events; a request that cannot start ends
    with `error` (the envelope, its details naming the attempts)."""
    yield sse("start", {"request_id": request_id, "log_url": log_url})
    try:
        snapshot = await get_snapshot(tenant_id)
        router.validate_names(snapshot, options)
        caller = Caller(tenant_id, None, request_id, snapshot.store_prompts, snapshot.slug)
        stream = await router.open_stream(snapshot, completion, options, caller)
    except AxonFlowError as exc:
        yield sse("error", exc.envelope())
        return
    async for event in api_events(stream, request_id):
        yield event


urlpatterns = [
    path("playground/", playground, name="playground"),
]
