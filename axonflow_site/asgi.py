"""One ASGI application: pages and API over HTTP, the live board over WebSocket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axonflow_site.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from routing.completions import mount  # noqa: E402  (/v1/*: the lean OpenAI-compatible handler)
from routing.lifespan import handle_lifespan  # noqa: E402

websocket_urlpatterns: list = []

application = ProtocolTypeRouter(
    {
        "http": mount(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": handle_lifespan,
    }
)
