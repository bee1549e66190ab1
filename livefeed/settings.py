"""Settings for Live Feed, all read from the environment with safe local defaults.

See the configuration table in README.md. Production-only values (SECRET_KEY) fail
loudly when DEBUG is off and they are missing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import overload

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from livefeed import redis_config

BASE_DIR = Path(__file__).resolve().parent.parent


def load_env_file(path: Path) -> None:
    """Set the variables of a ``KEY=value`` file (``make run`` writes ``.env``) that the environment lacks."""
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.removeprefix("export ").split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key, value)


# The real environment wins over the file; ENV_FILE= (empty) reads none.
_ENV_FILE = os.environ.get("ENV_FILE")
if _ENV_FILE is None or _ENV_FILE:
    load_env_file(Path(_ENV_FILE) if _ENV_FILE else BASE_DIR / ".env")


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@overload
def env_number(name: str, default: float) -> float: ...
@overload
def env_number(name: str, default: int, kind: type[int]) -> int: ...
@overload
def env_number(name: str, default: float, kind: type[float]) -> float: ...
def env_number(name: str, default: float, kind: type[float] = float) -> float:
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
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (for a local try-out, `make run` writes one to .env)."
        )
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
    "ops",
    "accounts",
]

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics are answered before the HTTPS redirect and the
    # host check (livefeed/health.py).
    "livefeed.health.ProbeMiddleware",
    "livefeed.request_id.RequestIdMiddleware",
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
# Django's runner, with log output in a file and skip reasons listed (livefeed/test_runner.py).
TEST_RUNNER = "livefeed.test_runner.LiveFeedTestRunner"
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
    # Connections are kept (CONN_MAX_AGE) in the request threads, which are reused
    # (livefeed/request_threads.py).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

# PostgreSQL: Django 5.2's connection pool (psycopg_pool), on unless DATABASE_POOL=0. Each
# request's thread borrows a connection and gives it back when the request ends, so one process
# holds between DATABASE_POOL_MIN_SIZE and DATABASE_POOL_MAX_SIZE connections (README "Running
# several instances"); a request finding all in use waits up to DATABASE_POOL_TIMEOUT seconds.
# Django requires CONN_MAX_AGE = 0 with a pool (the pool keeps them).
DATABASE_POOL = env_bool("DATABASE_POOL", True)
DATABASE_POOL_MIN_SIZE = env_number("DATABASE_POOL_MIN_SIZE", 2, int)
DATABASE_POOL_MAX_SIZE = env_number("DATABASE_POOL_MAX_SIZE", 20, int)
DATABASE_POOL_TIMEOUT = env_number("DATABASE_POOL_TIMEOUT", 10.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL:
    if not 0 <= DATABASE_POOL_MIN_SIZE <= DATABASE_POOL_MAX_SIZE or DATABASE_POOL_MAX_SIZE < 1:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_MIN_SIZE ({DATABASE_POOL_MIN_SIZE}) must be between 0 and DATABASE_POOL_MAX_SIZE "
            f"({DATABASE_POOL_MAX_SIZE}), which must be at least 1."
        )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With a pool, CONN_HEALTH_CHECKS (on) makes the pool check a connection before lending it
    # (psycopg_pool's check_connection): one the server dropped, after a PostgreSQL restart, is replaced.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": DATABASE_POOL_MIN_SIZE,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT,
    }

# Tests use a file (or database) of their own per run: daphne processes started by the
# multi-instance tests open it too, and parallel runs on one machine must not share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-db-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_livefeed_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and shared cache ----------------------------------
# livefeed/redis_config.py and README "Beyond one Redis": REDIS_URL may list several servers
# (comma-separated): the channel layer shards across them and shared state (the cache: rate
# limits, sign-in limits, /ops/ heartbeats) lives on the first. REDIS_SENTINELS (host:port,...)
# with REDIS_SENTINEL_MASTER reach the master Sentinel names instead, for every Redis use.
# Malformed values, and both ways at once, stop the server at start-up (livefeed.checks).

REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SENTINELS = os.environ.get("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "")
# Seconds to wait for a TCP connection to Redis (cache and channel layer), and for any
# answer of the cache (the rate limit). A post never waits longer on Redis than these: the
# rate limit fails open (feed.ratelimit) and publishing does not hold up the post.
REDIS_CONNECT_TIMEOUT = env_number("REDIS_CONNECT_TIMEOUT", 0.5)
REDIS_SOCKET_TIMEOUT = env_number("REDIS_SOCKET_TIMEOUT", 0.5)
# The channel layer's reads: its receive blocks in BZPOPMIN for up to 5 s (brpop_timeout of
# channels_redis's core layer, which notifications.layer extends), so its socket timeout must be longer
# or every idle receive would fail (checked at start-up, livefeed.checks). Its calls on the
# live path are bounded separately (LIVE_UPDATES layer_timeout).
CHANNEL_LAYER_SOCKET_TIMEOUT = env_number("CHANNEL_LAYER_SOCKET_TIMEOUT", 15.0)
CHANNEL_LAYER_CAPACITY = env_number("CHANNEL_LAYER_CAPACITY", 10000, int)
# Seconds a process's presence counts live in Redis without a heartbeat (rewritten every third
# of it): the connections of an instance that died stop counting within this (notifications.presence).
PRESENCE_TTL = env_number("PRESENCE_TTL", 15, int)

_REDIS_WHERE = {"urls": REDIS_URL, "sentinels": REDIS_SENTINELS, "master": REDIS_SENTINEL_MASTER}
_LAYER_HOSTS = redis_config.channel_layer_hosts(
    **_REDIS_WHERE, connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=CHANNEL_LAYER_SOCKET_TIMEOUT
)
_SHARED_CACHE = redis_config.cache_config(
    **_REDIS_WHERE, connect_timeout=REDIS_CONNECT_TIMEOUT, socket_timeout=REDIS_SOCKET_TIMEOUT
)

if _LAYER_HOSTS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.layer.LiveChannelLayer",
            "CONFIG": {
                "hosts": _LAYER_HOSTS,
                "capacity": CHANNEL_LAYER_CAPACITY,
                "expiry": 60,
                # Hubs re-add their memberships every 30 s (membership_refresh), so one left
                # behind by a failed group_discard (Redis away, a killed process) goes in 2 min.
                "group_expiry": 120,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CACHES = {"default": _SHARED_CACHE or {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

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

# --- Operations: metrics, the ops page ------------------------------------------

# Besides loopback clients, the networks that may read /metrics (the Prometheus servers).
# Never include the load balancer's own address: everyone reaches the app through it.
METRICS_ALLOWED_CIDRS = env_list("METRICS_ALLOWED_CIDRS", [])
# How often each process writes its heartbeat (connections, samples) for /ops/.
OPS_HEARTBEAT_INTERVAL = float(os.environ.get("OPS_HEARTBEAT_INTERVAL", "2"))
# The server's garbage-collector thresholds (gc.set_threshold; notifications.startup.tune_garbage_collector).
GC_THRESHOLDS = tuple(int(env_number(f"GC_THRESHOLD_{n}", default, int)) for n, default in enumerate((5_000, 10, 40)))

# --- Logging -------------------------------------------------------------------

# LOG_FORMAT=json: one JSON object per line (livefeed/logging.py). LOG_FILE: append there
# instead of stderr. (The test runner sends the run's log output to a file of its own.)
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
LOG_FILE = os.environ.get("LOG_FILE", "")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "livefeed.logging.RequestIdFilter"},
        "no_probes": {"()": "livefeed.logging.ProbeAccessFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "livefeed.logging.JsonFormatter"},
    },
    "handlers": {
        "console": (
            {"class": "logging.FileHandler", "filename": LOG_FILE, "delay": True}
            if LOG_FILE
            else {"class": "logging.StreamHandler"}
        )
        | {"formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # runserver's access log; daphne's own (--access-log) skips the probes too (livefeed/access_log.py).
    "loggers": {
        "django.channels.server": {"level": "WARNING", "filters": ["no_probes"]},
        # Django's own console handler (DEBUG only) would print django.* records a second time.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
    },
}
