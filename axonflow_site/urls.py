from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from axonflow_site.apidocs import APIDocsView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "api/docs/",
        APIDocsView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path("api/v1/", include("routing.api.urls")),
    path("", include("tenants.urls")),
    path("", include("console.urls")),
]
