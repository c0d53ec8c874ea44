from django.urls import path

from routing import views

app_name = "routing"

urlpatterns = [
    path("", views.home, name="home"),
    path("status/", views.status_board, name="status"),
]
