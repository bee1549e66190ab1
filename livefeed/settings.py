"""Settings for Live Feed, all read from the environment with safe local defaults.

See the configuration table in README.md. Production-only values (SECRET_KEY) fail
loudly when DEBUG is off and they are missing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_number(name: str, default: float, kind: type = float) -> float:
    """Return the variable as a number (`kind`: int or float); a malformed value names the variable."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-local-development-only-key-not-for-production-use"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ninja",
    "feed",
    "notifications",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "livefeed.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "livefeed.urls"
WSGI_APPLICATION = "livefeed.wsgi.application"
ASGI_APPLICATION = "livefeed.asgi.application"

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
                "accounts.context_processors.accounts",
                "notifications.context_processors.unread_notifications",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so concurrent posters queue up
    # instead of failing with "database is locked"; WAL lets readers run alongside.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

# Tests use a file (or database) of their own per run: daphne processes started by the
# multi-instance tests open it too, and parallel runs on one machine must not share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-db-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_livefeed_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and shared cache ----------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# Seconds to wait for a TCP connection to Redis (cache and channel layer), and for any
# answer of the cache (the rate limit). A post never waits longer on Redis than these: the
# rate limit fails open (feed.ratelimit) and publishing does not hold up the post.
REDIS_CONNECT_TIMEOUT = env_number("REDIS_CONNECT_TIMEOUT", 0.5)
REDIS_SOCKET_TIMEOUT = env_number("REDIS_SOCKET_TIMEOUT", 0.5)
# The channel layer's reads: its receive blocks in BZPOPMIN for up to 5 s
# (channels_redis.core.RedisChannelLayer.brpop_timeout), so its socket timeout must be longer
# or every idle receive would fail (checked at start-up, livefeed.checks). Its calls on the
# live path are bounded separately (LIVE_UPDATES layer_timeout).
CHANNEL_LAYER_SOCKET_TIMEOUT = env_number("CHANNEL_LAYER_SOCKET_TIMEOUT", 15.0)
CHANNEL_LAYER_CAPACITY = env_number("CHANNEL_LAYER_CAPACITY", 10000, int)
# Seconds a process's presence counts live in Redis without a heartbeat (rewritten every third
# of it): the connections of an instance that died stop counting within this (notifications.presence).
PRESENCE_TTL = env_number("PRESENCE_TTL", 15, int)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT,
                        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                    }
                ],
                "capacity": CHANNEL_LAYER_CAPACITY,
                "expiry": 60,
                # Hubs re-add their memberships every 30 s (membership_refresh), so one left
                # behind by a failed group_discard (Redis away, a killed process) goes in 2 min.
                "group_expiry": 120,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Feed behaviour -----------------------------------------------------------

# The test suite posts hundreds of comments from one address (127.0.0.1); the tests of the
# limit switch it on themselves. Everything else defaults to 30 a minute.
_TESTING = sys.argv[1:2] == ["test"]
FEED_POST_RATE = os.environ.get("FEED_POST_RATE", "off" if _TESTING else "30/m")
FEED_PAGE_SIZE = int(os.environ.get("FEED_PAGE_SIZE", "50"))

# --- Live updates (WebSocket) ---------------------------------------------------
# Tunables of notifications.hub; every key and its default is in notifications/conf.py.
# Values that would break a guarantee stop the server at start-up (livefeed.checks).
LIVE_UPDATES = {
    "check_interval": env_number("WS_CHECK_INTERVAL", 1.0),
    "slow_reader_max_bytes": env_number("WS_SLOW_READER_MAX_BYTES", 1024 * 1024, int),
    "slow_reader_timeout": env_number("WS_SLOW_READER_TIMEOUT", 10.0),
    "shutdown_grace": env_number("WS_SHUTDOWN_GRACE", 3.0),
}

# --- Auth, i18n, static -------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
# Anyone may create an account at /accounts/signup/; 0 turns that page off.
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
# Failed sign-ins per client address and per account name, and sign-ups per client
# address (feed.ratelimit syntax: N/s, N/m, N/h or off); see accounts/limits.py.
LOGIN_FAIL_RATE = os.environ.get("LOGIN_FAIL_RATE", "10/m")
LOGIN_FAIL_RATE_PER_ACCOUNT = os.environ.get("LOGIN_FAIL_RATE_PER_ACCOUNT", "5/m")
SIGNUP_RATE = os.environ.get("SIGNUP_RATE", "10/h")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Serve straight from the finders when collectstatic has not been run (local runs, tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security (production-safe when DEBUG is off) ------------------------------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# Browsers' preload lists are slow to leave: a domain not yet serving every subdomain over HTTPS turns it off.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Members-only WebSockets: each process checks all of them at once this often (their sessions
# exist, their users are active members: two queries) and closes those that lost the right
# with 4401 (notifications.session_watch); WS_SESSION_CHECK_INTERVAL paces the full re-reads.
WS_ACCESS_CHECK_INTERVAL = float(os.environ.get("WS_ACCESS_CHECK_INTERVAL", "1"))
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The client address behind load balancers (rate limits): how many proxies in front of the
# app append to X-Forwarded-For, or which addresses/networks they have. Neither set: only the
# socket peer counts and X-Forwarded-For, which anyone can send, is ignored.
TRUSTED_PROXY_COUNT = env_number("TRUSTED_PROXY_COUNT", 0, int)
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])

# A members-only feed's WebSocket re-reads its session this often and closes (4401) once
# the session has ended (notifications.session_watch).
WS_SESSION_CHECK_INTERVAL = env_number("WS_SESSION_CHECK_INTERVAL", 30.0)

# Slow and numerous connections (daphne): a request, or a WebSocket upgrade's headers, must
# arrive whole within HTTP_REQUEST_TIMEOUT seconds (else 408; 0 disables); one client address
# (as the rate limit computes it) may hold WS_MAX_PER_CLIENT open WebSockets per process
# (more are closed with 4429; 0 disables).
HTTP_REQUEST_TIMEOUT = float(os.environ.get("HTTP_REQUEST_TIMEOUT", "30"))
WS_MAX_PER_CLIENT = int(os.environ.get("WS_MAX_PER_CLIENT", "100"))

# No inline script or style anywhere: htmx is configured (htmx-config meta tag) to need neither.
# connect-src also gets ws:// and wss:// of the requested host (livefeed.security).
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# Request bodies larger than this are refused with 413 (Django reads no further).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(64 * 1024)))

# --- Logging -------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
