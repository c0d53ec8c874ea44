"""Console pages, one module per page (STYLE.md "Views and HTMX partials")."""
