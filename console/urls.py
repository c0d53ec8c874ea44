"""The console's URLs: each page module lists its own (console/views/<page>.py).
Page modules are added here with one line each."""

from console.views import board, providers

app_name = "console"

urlpatterns = [
    *providers.urlpatterns,
    *board.urlpatterns,
]
