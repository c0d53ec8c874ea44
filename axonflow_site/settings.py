"""AxonFlow settings: every knob comes from the environment (django-environ).

Embedded defaults (SQLite, in-memory channel layer) let a fresh checkout run with
no services; DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
Bad values fail here, at import, with a message naming the variable.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("axonflow.settings")

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

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
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.middleware.ActiveTenantMiddleware",
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
AXONFLOW_SECRET_ENV_PREFIXES = env.list("AXONFLOW_SECRET_ENV_PREFIXES", default=[])
AXONFLOW_SECRET_FILE_DIRS = env.list("AXONFLOW_SECRET_FILE_DIRS", default=[])
AXONFLOW_SECRET_ARN_PREFIXES = env.list("AXONFLOW_SECRET_ARN_PREFIXES", default=[])
AXONFLOW_SECRET_TTL_SECONDS = env.int("AXONFLOW_SECRET_TTL_SECONDS", default=300)

# Extra provider factories: "type=dotted.path.to.factory,other=pkg.mod.fn".
AXONFLOW_PROVIDER_FACTORIES = env.dict("AXONFLOW_PROVIDER_FACTORIES", default={})

# Health checks and retention.
AXONFLOW_HEALTH_INTERVAL_SECONDS = env.int("AXONFLOW_HEALTH_INTERVAL_SECONDS", default=30)
AXONFLOW_HEALTH_IN_PROCESS = env.bool("AXONFLOW_HEALTH_IN_PROCESS", default=not REDIS_URL)
AXONFLOW_RETENTION_DAYS = env.int("AXONFLOW_RETENTION_DAYS", default=30)

# Usage batch writer.
AXONFLOW_USAGE_FLUSH_SECONDS = env.float("AXONFLOW_USAGE_FLUSH_SECONDS", default=1.0)
AXONFLOW_USAGE_BATCH_SIZE = env.int("AXONFLOW_USAGE_BATCH_SIZE", default=500)

# Completion request limits.
AXONFLOW_MAX_BODY_BYTES = env.int("AXONFLOW_MAX_BODY_BYTES", default=1_048_576)
DATA_UPLOAD_MAX_MEMORY_SIZE = AXONFLOW_MAX_BODY_BYTES


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

# --- REST framework ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.authentication.HasTenantToken"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["routing.api.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "routing.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AxonFlow API",
    "DESCRIPTION": "LLM provider gateway: routing, failover, health and cost.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
