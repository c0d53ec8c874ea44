"""One ASGI application: pages and API over HTTP, the live board over WebSocket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axonflow_site.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from axonflow_site.lifespan import handle_lifespan  # noqa: E402
from axonflow_site.mount import mount  # noqa: E402  (/v1/* lean handler, /api/* lean Django, the rest)
from console.consumers import StatusBoardConsumer  # noqa: E402

websocket_urlpatterns: list = [
    path("ws/status/", StatusBoardConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": mount(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": handle_lifespan,
    }
)
