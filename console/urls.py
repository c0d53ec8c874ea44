from django.urls import path

from console.views import board, providers

app_name = "console"

urlpatterns = [
    path("", providers.provider_list, name="home"),
    path("status/", board.status_board, name="status"),
]
