"""/api/docs/: Swagger UI from our own static files (drf-spectacular-sidecar), under the
console's Content-Security-Policy.

/api/ runs without settings.MIDDLEWARE (axonflow_site/mount.py), so the page sets the
policy and X-Frame-Options itself. Its start-up script is a second request to the same
view (`?script`), never inline, so the policy needs no 'unsafe-inline'.
"""

from __future__ import annotations

from csp.constants import HEADER
from csp.utils import build_policy
from drf_spectacular.views import SpectacularSwaggerSplitView


class APIDocsView(SpectacularSwaggerSplitView):
    template_name = "api/swagger_ui.html"  # drf-spectacular's page without its inline <style>

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response[HEADER] = build_policy()
        response["X-Frame-Options"] = "DENY"
        return response
