"""AxonFlow settings: every knob comes from the environment (django-environ).

Embedded defaults (SQLite, in-memory channel layer) let a fresh checkout run with
no services; DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
Bad values fail here, at import, with a message naming the variable.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from datetime import timedelta
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("axonflow.settings")

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Strict readers for the knobs below: a bad value fails here, naming its variable.
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _flag(name: str, default: bool) -> bool:
    """A boolean variable read strictly: a misspelt value fails here instead of meaning false."""
    raw = env.str(name, default=str(default)).strip().lower()
    if raw not in _TRUE | _FALSE:
        raise ImproperlyConfigured(f"{name} must be true or false.")
    return raw in _TRUE


def _whole(name: str, default: int, minimum: int) -> int:
    raw = env.str(name, default=str(default)).strip()
    if not raw.isdigit() or int(raw) < minimum:
        raise ImproperlyConfigured(f"{name} must be a whole number, at least {minimum}.")
    return int(raw)


DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-dev-only-secret-key"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "adrf",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc from our static files
    "csp",
    "axes",
    "django_htmx",
    "channels",
    "tenants",
    "providers",
    "usage",
    "routing",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.middleware.ActiveTenantMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into the lockout page
]

ROOT_URLCONF = "axonflow_site.urls"
ASGI_APPLICATION = "axonflow_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.middleware.tenant_context_processor",
                "console.nav.console_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the health worker thread and request threads share the file.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
IS_POSTGRES = "postgresql" in DATABASES["default"]["ENGINE"]
if IS_POSTGRES:
    # An unreachable server fails a connection attempt in seconds, not at the OS's TCP
    # timeout: callers serving from caches meanwhile must not queue behind it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # One test database per test run, so concurrent runs on one server never collide.
    DATABASES["default"].setdefault(
        "TEST", {"NAME": env.str("AXONFLOW_TEST_DB_NAME", default=f"test_{DATABASES['default']['NAME']}_{os.getpid()}")}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels and Redis ---------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CHANNEL_PREFIX = env.str("AXONFLOW_CHANNEL_PREFIX", default="axonflow")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels-redis blocks up to 5 s in BZPOPMIN; redis-py 8 times reads out after
                # 5 s by default, so an idle socket's receive would race that and kill the
                # consumer. Reads get 15 s.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}],
                "prefix": CHANNEL_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def _seconds(name: str, default: float, minimum: float) -> float:
    try:
        value = float(env.str(name, default=str(default)).strip())
    except ValueError:
        value = float("nan")
    if not minimum <= value <= 86_400:  # NaN fails too
        raise ImproperlyConfigured(f"{name} must be a number of seconds, at least {minimum}.")
    return value


# Degradation (axonflow_site/shared.py, docs/reliability.md): each Redis call is bounded
# by the timeout; after a failure, Redis is tried again once per retry interval while
# everything runs on its in-process fallback. While the database cannot be reached, a
# tenant's routing snapshot and API tokens stay in use up to AXONFLOW_STALE_IF_ERROR_SECONDS
# past their expiry (0: never).
AXONFLOW_REDIS_TIMEOUT_SECONDS = _seconds("AXONFLOW_REDIS_TIMEOUT_SECONDS", 0.5, minimum=0.01)
AXONFLOW_REDIS_RETRY_SECONDS = _seconds("AXONFLOW_REDIS_RETRY_SECONDS", 5.0, minimum=0.01)
AXONFLOW_STALE_IF_ERROR_SECONDS = _seconds("AXONFLOW_STALE_IF_ERROR_SECONDS", 600.0, minimum=0)

# --- Encryption of provider keys -------------------------------------------------
KEY_FILE = BASE_DIR / ".axonflow-key"


def _encryption_keys() -> list[str]:
    keys = env.list("AXONFLOW_ENCRYPTION_KEYS", default=[])
    if not keys:
        if not DEBUG:
            raise ImproperlyConfigured(
                "AXONFLOW_ENCRYPTION_KEYS is not set. Generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
                "and set it; provider keys are encrypted with it."
            )
        if not KEY_FILE.exists():
            KEY_FILE.write_text(Fernet.generate_key().decode() + "\n")
            KEY_FILE.chmod(0o600)
            log.warning("DEBUG: generated a local encryption key in %s (not for production)", KEY_FILE)
        keys = [KEY_FILE.read_text().strip()]
    for key in keys:
        try:
            Fernet(key.encode())
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                "AXONFLOW_ENCRYPTION_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from exc
    return keys


AXONFLOW_ENCRYPTION_KEYS = _encryption_keys()

# Secret references (env:NAME, file:/path, arn:...) resolve only inside these allowlists.
# An entry containing {tenant} serves that one tenant (providers/secrets.py); an entry
# without it is shared by every tenant.
AXONFLOW_SECRET_ENV_PREFIXES = env.list("AXONFLOW_SECRET_ENV_PREFIXES", default=[])
AXONFLOW_SECRET_FILE_DIRS = env.list("AXONFLOW_SECRET_FILE_DIRS", default=[])
AXONFLOW_SECRET_ARN_PREFIXES = env.list("AXONFLOW_SECRET_ARN_PREFIXES", default=[])
AXONFLOW_SECRET_TTL_SECONDS = env.int("AXONFLOW_SECRET_TTL_SECONDS", default=300)
if any(d.strip() and not d.strip().startswith("/") for d in AXONFLOW_SECRET_FILE_DIRS):
    raise ImproperlyConfigured("AXONFLOW_SECRET_FILE_DIRS entries must be absolute paths.")

# Server-side AWS credentials (Bedrock without keys) serve only these tenants (slugs).
AXONFLOW_AMBIENT_AWS_TENANTS = [s.strip() for s in env.list("AXONFLOW_AMBIENT_AWS_TENANTS", default=[]) if s.strip()]
if not all(re.fullmatch(r"[-a-zA-Z0-9_]+", slug) for slug in AXONFLOW_AMBIENT_AWS_TENANTS):
    raise ImproperlyConfigured("AXONFLOW_AMBIENT_AWS_TENANTS must be a comma-separated list of tenant slugs.")

# Egress (SPEC §6, providers/egress.py): base URLs on loopback, private and CGNAT addresses
# only when allowed (the demo, a local Ollama); never on a deployment with untrusted tenants.
# Strict: a misspelt value fails at import instead of silently meaning false.
_allow_private = env.str("AXONFLOW_ALLOW_PRIVATE_BASE_URLS", default="false").strip().lower()
if _allow_private not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
    raise ImproperlyConfigured("AXONFLOW_ALLOW_PRIVATE_BASE_URLS must be true or false.")
AXONFLOW_ALLOW_PRIVATE_BASE_URLS = _allow_private in ("true", "1", "yes", "on")

# Extra provider factories: "type=dotted.path.to.factory,other=pkg.mod.fn".
AXONFLOW_PROVIDER_FACTORIES = env.dict("AXONFLOW_PROVIDER_FACTORIES", default={})

# Health checks and retention.
AXONFLOW_HEALTH_INTERVAL_SECONDS = env.int("AXONFLOW_HEALTH_INTERVAL_SECONDS", default=30)
AXONFLOW_HEALTH_IN_PROCESS = env.bool("AXONFLOW_HEALTH_IN_PROCESS", default=not REDIS_URL)
AXONFLOW_RETENTION_DAYS = env.int("AXONFLOW_RETENTION_DAYS", default=30)

# Usage batch writer.
AXONFLOW_USAGE_FLUSH_SECONDS = env.float("AXONFLOW_USAGE_FLUSH_SECONDS", default=1.0)
AXONFLOW_USAGE_BATCH_SIZE = env.int("AXONFLOW_USAGE_BATCH_SIZE", default=500)

# Shutdown: on SIGTERM the server stops accepting and gives the requests and streams in
# flight this long to finish before it cancels them, then flushes usage (README
# "Shutdown"). `manage.py serve` hands it to uvicorn as timeout_graceful_shutdown.
AXONFLOW_SHUTDOWN_GRACE_SECONDS = _whole("AXONFLOW_SHUTDOWN_GRACE_SECONDS", 30, minimum=1)

# Observability (docs/observability.md). GET /metrics exists only with a token; several
# worker processes share their metrics through PROMETHEUS_MULTIPROC_DIR (read by
# prometheus-client itself, at import). Traces: the optional `axonflow[otel]` extra and
# the standard OTEL_* variables (axonflow_site/tracing.py).
AXONFLOW_METRICS = env.bool("AXONFLOW_METRICS", default=True)
AXONFLOW_METRICS_TOKEN = env.str("AXONFLOW_METRICS_TOKEN", default="")
AXONFLOW_METRICS_TENANT_LABELS = env.bool("AXONFLOW_METRICS_TENANT_LABELS", default=True)
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")

# Budgets (docs/budgets.md): how long a request's reservation holds before it expires on
# its own (a process that died releases its holds this way; keep it above your longest
# request), and whether hard limits admit requests while Redis cannot be reached.
AXONFLOW_BUDGET_HOLD_SECONDS = env.float("AXONFLOW_BUDGET_HOLD_SECONDS", default=600.0)
if AXONFLOW_BUDGET_HOLD_SECONDS <= 0:
    raise ImproperlyConfigured("AXONFLOW_BUDGET_HOLD_SECONDS must be positive.")
AXONFLOW_BUDGET_FAIL_OPEN = env.bool("AXONFLOW_BUDGET_FAIL_OPEN", default=False)
AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS = env.float("AXONFLOW_BUDGET_REDIS_TIMEOUT_SECONDS", default=2.0)
AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS = env.int("AXONFLOW_BUDGET_DEFAULT_MAX_TOKENS", default=4096)

# Completion request limits.
# Every HTTP path (axonflow_site/mount.py): a longer body is refused with 413 before it
# is read. Django keeps a body up to FILE_UPLOAD_MAX_MEMORY_SIZE in memory and spools a
# longer one to a temporary file: at least the limit, so nothing we accept touches disk.
AXONFLOW_MAX_BODY_BYTES = env.int("AXONFLOW_MAX_BODY_BYTES", default=1_048_576)
if AXONFLOW_MAX_BODY_BYTES < 1024:
    raise ImproperlyConfigured("AXONFLOW_MAX_BODY_BYTES must be at least 1024 (bytes).")
DATA_UPLOAD_MAX_MEMORY_SIZE = AXONFLOW_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = max(AXONFLOW_MAX_BODY_BYTES, 2_621_440)


# --- Auth, i18n, static -----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "tenants:login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "tenants:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves static files from the app itself (no CDN, no separate web server);
# finders make `collectstatic` optional.
WHITENOISE_USE_FINDERS = True
# Until `collectstatic` fills STATIC_ROOT the finders serve everything; no warning needed.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# --- Production security (README "Running in production"; `manage.py check --deploy`) ----
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto on every request (replacing
# any the client sent), trust it: is_secure(), the HTTPS redirect and CSRF's origin check
# then see https. Without such a proxy leave it off, or a client could claim https.
AXONFLOW_TRUST_X_FORWARDED_PROTO = _flag("AXONFLOW_TRUST_X_FORWARDED_PROTO", False)
if AXONFLOW_TRUST_X_FORWARDED_PROTO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _flag("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[])  # path regexes, no leading slash
for _pattern in SECURE_REDIRECT_EXEMPT:
    try:
        re.compile(_pattern)
    except re.error as exc:
        raise ImproperlyConfigured(f"SECURE_REDIRECT_EXEMPT holds an invalid regular expression: {exc}") from None
SECURE_HSTS_SECONDS = _whole("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = _flag("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = _flag("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _flag("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Sessions: 12 hours from sign-in by default; Django rotates the key at login and
# deletes the session at logout. htmx and the playground send the CSRF token from the
# page, so no script needs to read the cookie.
SESSION_COOKIE_AGE = _whole("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = _flag("SESSION_EXPIRE_AT_BROWSER_CLOSE", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True

# Login throttling (django-axes): after AXONFLOW_LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one client address, that pair is refused for the cool-off, even with the
# right password. The address is the connection's peer, which uvicorn takes from
# X-Forwarded-For only for the proxies in FORWARDED_ALLOW_IPS (uvicorn's own variable).
AUTHENTICATION_BACKENDS = [
    "axonflow_site.lockout.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _whole("AXONFLOW_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=_whole("AXONFLOW_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "tenants/locked.html"
AXES_DISABLE_ACCESS_LOG = True  # failures only: no row per successful sign-in

# Content-Security-Policy (django-csp) for the console, the admin and /api/docs/: scripts,
# styles, images and sockets from this origin only, no inline script or style, no framing.
# 'self' in connect-src covers the board's ws:// / wss:// socket to the same host (CSP 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # Swagger UI's icons are data: SVGs in its stylesheet
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- REST framework ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.authentication.HasTenantToken"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["routing.api.parsers.SafeJSONParser"],
    # Tenant.api_rate_limit for every token-authenticated view (completions check it on the event loop).
    "DEFAULT_THROTTLE_CLASSES": ["routing.api.throttling.TenantRateThrottle"],
    "EXCEPTION_HANDLER": "routing.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AxonFlow API",
    "DESCRIPTION": "LLM provider gateway: routing, failover, health and cost.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge image from validator.swagger.io (an outside host; the CSP refuses it anyway).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Logs never carry a credential (axonflow_site/logfilter.py): every handler here formats
# through ScrubbingFormatter, Django's own loggers lose their default handlers and reach the
# root's, and uvicorn's loggers (it installs its own handlers when it starts) get the filter.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "scrub_secrets": {"()": "axonflow_site.logfilter.ScrubSecretsFilter"},
        "request_fields": {"()": "axonflow_site.context.RequestFields"},
    },
    "formatters": {
        "plain": {
            "()": "axonflow_site.logfilter.ScrubbingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        # One JSON object a line: timestamp, level, logger, message, request_id, tenant,
        # provider (and exc_info when there is one), scrubbed like the plain lines.
        "json": {"()": "axonflow_site.logfilter.JsonScrubbingFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_fields"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # failures and lockouts; not every sign-in, not a banner at start
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
        # uvicorn's own handlers are replaced by ours, so that LOG_FORMAT holds for its
        # lines too (the access line is written in the request's task: it carries the id).
        "uvicorn.error": {"handlers": ["console"], "propagate": False, "filters": ["scrub_secrets"]},
        "uvicorn.access": {"handlers": ["console"], "propagate": False, "filters": ["scrub_secrets"]},
    },
}
