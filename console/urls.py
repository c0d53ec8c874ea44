"""The console's URLs: each page module lists its own (console/views/<page>.py).
Page modules are added here with one line each."""

from console.views import audit, board, budgets, members, playground, providers, requests, tokens
from console.views import routes as model_routes

app_name = "console"

urlpatterns = [
    *providers.urlpatterns,
    *board.urlpatterns,
    *requests.urlpatterns,
    *playground.urlpatterns,
    *model_routes.urlpatterns,
    *tokens.urlpatterns,
    *members.urlpatterns,
    *budgets.urlpatterns,
    *audit.urlpatterns,
]
