"""The console's URLs: each page module lists its own (console/views/<page>.py)."""

from console.views import board, providers

app_name = "console"

urlpatterns = [
    *providers.urlpatterns,
    *board.urlpatterns,
]
