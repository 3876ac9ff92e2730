"""Clawdbot settings, read from the environment (see the configuration table in README.md)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from clawdbot_site import redis_keys
from clawdbot_site.env import (
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_names_map,
    env_scores,
    env_str,
)
from nodes.weights import BASE_SCORES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CLAWDBOT_VAR_DIR", str(BASE_DIR / "var")))

CLAWDBOT_MODE = env_choice("CLAWDBOT_MODE", "development", ("development", "production"))
PRODUCTION = CLAWDBOT_MODE == "production"
DEBUG = env_bool("CLAWDBOT_DEBUG", False)
if PRODUCTION and DEBUG:
    raise ConfigError("CLAWDBOT_DEBUG must be false when CLAWDBOT_MODE=production")


def _secret_key() -> str:
    configured = env_str("CLAWDBOT_SECRET_KEY", "")
    if configured:
        if len(configured) < 32:
            raise ConfigError("CLAWDBOT_SECRET_KEY must be at least 32 characters long")
        if configured.startswith("change-me"):  # deploy/clawdbot.env.example's placeholder
            raise ConfigError("CLAWDBOT_SECRET_KEY is still the example's placeholder")
        return configured
    if PRODUCTION:
        raise ConfigError("CLAWDBOT_SECRET_KEY must be set when CLAWDBOT_MODE=production")
    # Development keeps a generated key on disk: API keys are stored as HMACs keyed by it,
    # so a key that changed on every start would invalidate every issued API key.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = [
    h.strip()
    for h in env_str("CLAWDBOT_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in env_str("CLAWDBOT_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "nodes",
    "gateway",
    "admin_api",
    "configfile",
    "alerts",
    "readiness",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clawdbot_site.urls"
ASGI_APPLICATION = "clawdbot_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict[str, object]:
    url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'clawdbot.sqlite3'}")
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except Exception as exc:  # dj-database-url raises several types for a bad URL
        raise ConfigError(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(str(config["NAME"])).parent.mkdir(parents=True, exist_ok=True)
        # SQLite under several processes (gateway, worker, beat): WAL and a busy timeout
        # turn "database is locked" into a short wait.
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
        config["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    return dict(config)


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_url() -> str:
    # Without REDIS_URL, `make run` starts an embedded Redis on this socket and every
    # process (and any `clawdbot` command run beside it) finds it there.
    url = env_str("REDIS_URL", f"unix://{VAR_DIR / 'redis.sock'}")
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {url!r}")
    return url


REDIS_URL = _redis_url()

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": redis_keys.DJANGO_CACHE,
    }
}

# A consumer waits for its next message with BZPOPMIN for 5 s at a time, and redis-py 8's
# default socket timeout is also 5 s: the read timed out first and killed every console
# WebSocket each few seconds. Reads get longer than the longest blocking pop.
CHANNEL_LAYER_SOCKET_TIMEOUT_S = 30
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT_S}],
            "prefix": redis_keys.CHANNELS,
        },
    }
}


def _celery_url(url: str) -> str:
    # Kombu and Celery's result backend spell a unix socket "redis+socket://".
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://")
    return url


CELERY_BROKER_URL = _celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = _celery_url(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Routing weight: base score per GPU type (A10 100, A100 220, H100 380 as the seed has it).
CLAWDBOT_GPU_SCORES = env_scores("CLAWDBOT_GPU_SCORES", BASE_SCORES)

# Control-plane cadence and health thresholds.
CLAWDBOT_PROBE_INTERVAL_S = env_float("CLAWDBOT_PROBE_INTERVAL_S", 5.0, minimum=0.2)
CLAWDBOT_TELEMETRY_INTERVAL_S = env_float("CLAWDBOT_TELEMETRY_INTERVAL_S", 5.0, minimum=0.2)
# The inference servers' own load gauges (/metrics of vLLM, SGLang, llama.cpp, TGI): scraped
# this often, each given this long to answer (a server slow to report under load keeps its
# last values, marked stale, until they expire after 15 s).
CLAWDBOT_SERVER_LOAD_INTERVAL_S = env_float("CLAWDBOT_SERVER_LOAD_INTERVAL_S", 2.0, minimum=0.2)
CLAWDBOT_SERVER_LOAD_TIMEOUT_S = env_float("CLAWDBOT_SERVER_LOAD_TIMEOUT_S", 1.5, minimum=0.1)
CLAWDBOT_DEGRADE_AFTER = env_int("CLAWDBOT_DEGRADE_AFTER", 3, minimum=1)
CLAWDBOT_DOWN_AFTER = env_int("CLAWDBOT_DOWN_AFTER", 6, minimum=1)
CLAWDBOT_RECOVER_AFTER = env_int("CLAWDBOT_RECOVER_AFTER", 2, minimum=1)
CLAWDBOT_PROBE_HISTORY_HOURS = env_float("CLAWDBOT_PROBE_HISTORY_HOURS", 24.0, minimum=0.1)
CLAWDBOT_TELEMETRY_HISTORY_DAYS = env_float("CLAWDBOT_TELEMETRY_HISTORY_DAYS", 7.0, minimum=0.1)
CLAWDBOT_HEAL_MAX_PER_HOUR = env_int("CLAWDBOT_HEAL_MAX_PER_HOUR", 3, minimum=0)
CLAWDBOT_HEAL_BACKOFF_S = env_float("CLAWDBOT_HEAL_BACKOFF_S", 60.0, minimum=0.0)
CLAWDBOT_HEAL_WAIT_S = env_float("CLAWDBOT_HEAL_WAIT_S", 120.0, minimum=1.0)

# Each entry expires just under its interval: a backlog after an outage is dropped, not replayed.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "probe-nodes": {
        "task": "nodes.tasks.probe_nodes",
        "schedule": CLAWDBOT_PROBE_INTERVAL_S,
        "options": {"expires": CLAWDBOT_PROBE_INTERVAL_S * 0.9},
    },
    "collect-telemetry": {
        "task": "nodes.tasks.dispatch_telemetry",
        "schedule": CLAWDBOT_TELEMETRY_INTERVAL_S,
        "options": {"expires": CLAWDBOT_TELEMETRY_INTERVAL_S * 0.9},
    },
    "scrape-server-load": {
        "task": "nodes.tasks.scrape_server_load",
        "schedule": CLAWDBOT_SERVER_LOAD_INTERVAL_S,
        "options": {"expires": CLAWDBOT_SERVER_LOAD_INTERVAL_S * 0.9},
    },
    "telemetry-history": {
        "task": "nodes.tasks.record_telemetry_history",
        "schedule": 60.0,
        "options": {"expires": 50.0},
    },
    "prune-history": {
        "task": "nodes.tasks.prune_history",
        "schedule": 3600.0,
        "options": {"expires": 3000.0},
    },
    "flush-request-logs": {
        "task": "gateway.tasks.flush_request_logs",
        "schedule": 2.0,
        "options": {"expires": 1.8},
    },
    # The console's 24-hour and 7-day latency and usage charts read these rollups.
    "refresh-rollups": {
        "task": "dashboard.tasks.refresh_rollups",
        "schedule": 30.0,
        "options": {"expires": 25.0},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# The console's chart library, installed from the npm registry by `make` (`npm ci` against the
# committed package-lock.json) and served as our own static files, so the console works
# offline and no third-party code is committed.
NPM_MODULES_DIR = Path(env_str("CLAWDBOT_NODE_MODULES", str(BASE_DIR / "node_modules")))
STATICFILES_DIRS = [("vendor/uplot", NPM_MODULES_DIR / "uplot" / "dist")]
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Clawdbot management API",
    "DESCRIPTION": (
        "Nodes, model profiles, deployments, API keys, the request log and node actions. "
        "Authenticate with a staff API key (`Authorization: Bearer ck-…`, created with "
        "`clawdbot apikey create --staff`) or a staff user's admin session. Every error has "
        'the OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
    "ENUM_NAME_OVERRIDES": {"NodeStateEnum": "nodes.choices.NodeState"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "admin_api.schema.paths_without_trailing_slash",
        "admin_api.schema.without_database_integer_bounds",
    ],
}

if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("CLAWDBOT_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("CLAWDBOT_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One INFO line per upstream request: noise, and measurable cost on the hot path.
        "httpx": {"level": "WARNING"},
    },
}

# Gateway (data plane) policy.
CLAWDBOT_PUBLIC_URL = env_str("CLAWDBOT_PUBLIC_URL", "http://127.0.0.1:8000")
CLAWDBOT_PROBE_TIMEOUT_S = env_float("CLAWDBOT_PROBE_TIMEOUT_S", 3.0, minimum=0.1)
CLAWDBOT_WARMUP_TIMEOUT_S = env_float("CLAWDBOT_WARMUP_TIMEOUT_S", 120.0, minimum=1.0)
CLAWDBOT_MAX_BODY_BYTES = env_int("CLAWDBOT_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
CLAWDBOT_MAX_ATTEMPTS = env_int("CLAWDBOT_MAX_ATTEMPTS", 3, minimum=1)
CLAWDBOT_QUEUE_TIMEOUT_S = env_float("CLAWDBOT_QUEUE_TIMEOUT_S", 30.0, minimum=0.0)
CLAWDBOT_CONNECT_TIMEOUT_S = env_float("CLAWDBOT_CONNECT_TIMEOUT_S", 3.0, minimum=0.1)
# How long a node may take to start its answer: a streaming answer's prefill, or the whole
# generation of one answered without streaming (Ollama sends nothing until it is done), so it
# is longer than the read timeout, the longest pause allowed between parts of an answer.
CLAWDBOT_FIRST_BYTE_TIMEOUT_S = env_float("CLAWDBOT_FIRST_BYTE_TIMEOUT_S", 300.0, minimum=0.1)
CLAWDBOT_READ_TIMEOUT_S = env_float("CLAWDBOT_READ_TIMEOUT_S", 120.0, minimum=0.1)
# A pooled upstream connection idle longer than this is closed rather than reused: a NAT or
# firewall may have dropped it silently (keep it under theirs; most allow minutes).
CLAWDBOT_UPSTREAM_IDLE_S = env_float("CLAWDBOT_UPSTREAM_IDLE_S", 30.0, minimum=0.1)
CLAWDBOT_KEEPALIVE_S = env_float("CLAWDBOT_KEEPALIVE_S", 2.0, minimum=0.05)
# Longer than the usual load balancer's idle timeout (AWS ALB: 60 s), so the gateway never
# closes a kept-alive connection just as the balancer reuses it (the balancer answers 502).
CLAWDBOT_HTTP_IDLE_S = env_float("CLAWDBOT_HTTP_IDLE_S", 75.0, minimum=0.5)
CLAWDBOT_EJECT_AFTER = env_int("CLAWDBOT_EJECT_AFTER", 3, minimum=1)

# Routing by expected completion time (gateway/routing.py; README "How requests are routed").
# Each node's decode and prefill speed per model is learned from its answers; old samples
# fade with this time constant, so a node that slows down is seen within seconds.
CLAWDBOT_SPEED_TAU_S = env_float("CLAWDBOT_SPEED_TAU_S", 5.0, minimum=0.1)
# Until this many recent samples back it, a learned speed is blended with the GPU-type prior;
# samples older than CLAWDBOT_SPEED_TRUST_S count less and less (an idle node drifts back to
# its prior and is tried again).
CLAWDBOT_SPEED_MIN_SAMPLES = env_float("CLAWDBOT_SPEED_MIN_SAMPLES", 5.0, minimum=1.0)
CLAWDBOT_SPEED_TRUST_S = env_float("CLAWDBOT_SPEED_TRUST_S", 60.0, minimum=1.0)
# How much each other running sequence slows one sequence's decoding (batched decoding
# shares the GPU): 0.15 means 8 at once decode each at 1 / (1 + 0.15 * 7) of the speed alone.
CLAWDBOT_BATCH_SLOWDOWN = env_float("CLAWDBOT_BATCH_SLOWDOWN", 0.15, minimum=0.0)
# Conversation affinity (gateway/prefixes.py): prefer the node holding a conversation's
# prompt cache. Remembered prefixes expire after the TTL; at most MAX are kept.
CLAWDBOT_AFFINITY = env_bool("CLAWDBOT_AFFINITY", True)
CLAWDBOT_AFFINITY_TTL_S = env_float("CLAWDBOT_AFFINITY_TTL_S", 600.0, minimum=1.0)
CLAWDBOT_AFFINITY_MAX = env_int("CLAWDBOT_AFFINITY_MAX", 200_000, minimum=100)

# Email alerts (alerts app) go through Django's SMTP backend.
EMAIL_HOST = env_str("CLAWDBOT_SMTP_HOST", "localhost")
EMAIL_PORT = env_int("CLAWDBOT_SMTP_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("CLAWDBOT_SMTP_USER", "")
EMAIL_HOST_PASSWORD = env_str("CLAWDBOT_SMTP_PASSWORD", "")
EMAIL_USE_TLS = env_bool("CLAWDBOT_SMTP_STARTTLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("CLAWDBOT_ALERT_FROM", "clawdbot@localhost")
CLAWDBOT_EJECT_COOLDOWN_S = env_float("CLAWDBOT_EJECT_COOLDOWN_S", 5.0, minimum=0.1)
CLAWDBOT_EJECT_MAX_COOLDOWN_S = env_float("CLAWDBOT_EJECT_MAX_COOLDOWN_S", 120.0, minimum=0.1)
CLAWDBOT_TRUNCATION_RATIO = env_float("CLAWDBOT_TRUNCATION_RATIO", 0.5, minimum=0.0)

# Degradation tiers (README, "When things go wrong"): the cluster's error rate over a sliding
# window, shared by every gateway process through Redis, selects a tier.
CLAWDBOT_TIER_ENABLED = env_bool("CLAWDBOT_TIER_ENABLED", True)
CLAWDBOT_TIER_WINDOW_S = env_int("CLAWDBOT_TIER_WINDOW_S", 60, minimum=2)
CLAWDBOT_TIER_1_AT = env_float("CLAWDBOT_TIER_1_AT", 0.05, minimum=0.0)
CLAWDBOT_TIER_2_AT = env_float("CLAWDBOT_TIER_2_AT", 0.15, minimum=0.0)
CLAWDBOT_TIER_3_AT = env_float("CLAWDBOT_TIER_3_AT", 0.30, minimum=0.0)
CLAWDBOT_TIER_MARGIN = env_float("CLAWDBOT_TIER_MARGIN", 0.02, minimum=0.0)
CLAWDBOT_TIER_MIN_REQUESTS = env_int("CLAWDBOT_TIER_MIN_REQUESTS", 20, minimum=1)
CLAWDBOT_TIER_MIN_DWELL_S = env_float("CLAWDBOT_TIER_MIN_DWELL_S", 30.0, minimum=0.0)
if not 0 < CLAWDBOT_TIER_1_AT < CLAWDBOT_TIER_2_AT < CLAWDBOT_TIER_3_AT <= 1:
    raise ConfigError(
        "CLAWDBOT_TIER_1_AT, CLAWDBOT_TIER_2_AT and CLAWDBOT_TIER_3_AT are error rates "
        "(fractions) that must rise: 0 < tier 1 < tier 2 < tier 3 <= 1, got "
        f"{CLAWDBOT_TIER_1_AT}, {CLAWDBOT_TIER_2_AT}, {CLAWDBOT_TIER_3_AT}"
    )
if CLAWDBOT_TIER_MARGIN >= CLAWDBOT_TIER_1_AT:
    raise ConfigError(
        f"CLAWDBOT_TIER_MARGIN ({CLAWDBOT_TIER_MARGIN}) must be below CLAWDBOT_TIER_1_AT "
        f"({CLAWDBOT_TIER_1_AT}), or tier 1 could never be left"
    )
# The response cache that tier 1 answers from.
CLAWDBOT_CACHE_TTL_S = env_float("CLAWDBOT_CACHE_TTL_S", 600.0, minimum=1.0)
CLAWDBOT_CACHE_SHARED = env_bool("CLAWDBOT_CACHE_SHARED", False)
CLAWDBOT_CACHE_MAX_BYTES = env_int("CLAWDBOT_CACHE_MAX_BYTES", 64 * 1024 * 1024, minimum=0)
CLAWDBOT_CACHE_MAX_ENTRY_BYTES = env_int("CLAWDBOT_CACHE_MAX_ENTRY_BYTES", 256 * 1024, minimum=1)
# Answers are stored only while the window's error rate is at least this (or a tier is on).
CLAWDBOT_CACHE_WARM_AT = env_float("CLAWDBOT_CACHE_WARM_AT", 0.01, minimum=0.0)

# Single sign-on on /v1 (README, "Single sign-on (JWT/OIDC)"): bearer JWTs from an identity
# provider, checked against a shared secret or its JWKS, as an alternative to Clawdbot keys.
# Off unless CLAWDBOT_JWT_SECRET or CLAWDBOT_JWT_JWKS_URL is set.
JWT_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
JWT_PUBLIC_KEY_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)


def _jwt_secret() -> str:
    secret = env_str("CLAWDBOT_JWT_SECRET", "")
    if secret and len(secret) < 32:
        raise ConfigError("CLAWDBOT_JWT_SECRET must be at least 32 characters long")
    return secret


def _jwks_url() -> str:
    url = env_str("CLAWDBOT_JWT_JWKS_URL", "")
    if not url:
        return ""
    parts = urlsplit(url)
    # Whoever can alter the key set can sign any token: plain HTTP only on this host.
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ConfigError(
            f"CLAWDBOT_JWT_JWKS_URL must be an https:// URL (http:// only to a loopback "
            f"address), got {url!r}"
        )
    return url


CLAWDBOT_JWT_SECRET = _jwt_secret()
CLAWDBOT_JWT_JWKS_URL = _jwks_url()
CLAWDBOT_JWT_ENABLED = bool(CLAWDBOT_JWT_SECRET or CLAWDBOT_JWT_JWKS_URL)


def _jwt_algorithms() -> tuple[str, ...]:
    default = ("HS256",) * bool(CLAWDBOT_JWT_SECRET) + ("RS256",) * bool(CLAWDBOT_JWT_JWKS_URL)
    algorithms = env_list("CLAWDBOT_JWT_ALGORITHMS", default)
    for alg in algorithms:
        if alg in JWT_HMAC_ALGORITHMS and not CLAWDBOT_JWT_SECRET:
            needs = "CLAWDBOT_JWT_SECRET"
        elif alg in JWT_PUBLIC_KEY_ALGORITHMS and not CLAWDBOT_JWT_JWKS_URL:
            needs = "CLAWDBOT_JWT_JWKS_URL"
        elif alg not in JWT_HMAC_ALGORITHMS + JWT_PUBLIC_KEY_ALGORITHMS:
            raise ConfigError(
                f"CLAWDBOT_JWT_ALGORITHMS: {alg!r} is not accepted; choose from "
                f"{', '.join(JWT_HMAC_ALGORITHMS + JWT_PUBLIC_KEY_ALGORITHMS)}"
            )
        else:
            continue
        raise ConfigError(f"CLAWDBOT_JWT_ALGORITHMS lists {alg}, which needs {needs}")
    for alg in set(algorithms) & set(JWT_HMAC_ALGORITHMS):
        if len(CLAWDBOT_JWT_SECRET.encode()) < int(alg[2:]) // 8:  # as long as the hash
            raise ConfigError(
                f"CLAWDBOT_JWT_SECRET must be at least {int(alg[2:]) // 8} bytes long for {alg}"
            )
    if CLAWDBOT_JWT_SECRET and not set(algorithms) & set(JWT_HMAC_ALGORITHMS):
        raise ConfigError("CLAWDBOT_JWT_SECRET is set but CLAWDBOT_JWT_ALGORITHMS lists no HS*")
    if CLAWDBOT_JWT_JWKS_URL and not set(algorithms) & set(JWT_PUBLIC_KEY_ALGORITHMS):
        raise ConfigError(
            "CLAWDBOT_JWT_JWKS_URL is set but CLAWDBOT_JWT_ALGORITHMS lists no public-key algorithm"
        )
    return algorithms


def _jwt_default_models() -> tuple[str, ...]:
    models = env_list("CLAWDBOT_JWT_DEFAULT_MODELS", ("*",))
    if "none" in models:
        if len(models) > 1:
            raise ConfigError("CLAWDBOT_JWT_DEFAULT_MODELS: 'none' cannot be listed with models")
        return ()
    return models


CLAWDBOT_JWT_ALGORITHMS = _jwt_algorithms()
CLAWDBOT_JWT_ISSUER = env_str("CLAWDBOT_JWT_ISSUER", "")
CLAWDBOT_JWT_AUDIENCE = env_list("CLAWDBOT_JWT_AUDIENCE")
CLAWDBOT_JWT_LEEWAY_S = env_float("CLAWDBOT_JWT_LEEWAY_S", 30.0, minimum=0.0)
CLAWDBOT_JWT_JWKS_REFRESH_S = env_float("CLAWDBOT_JWT_JWKS_REFRESH_S", 300.0, minimum=1.0)
CLAWDBOT_JWT_JWKS_COOLDOWN_S = env_float("CLAWDBOT_JWT_JWKS_COOLDOWN_S", 10.0, minimum=0.1)
CLAWDBOT_JWT_SUBJECT_CLAIM = env_str("CLAWDBOT_JWT_SUBJECT_CLAIM", "sub")
CLAWDBOT_JWT_MODELS_CLAIM = env_str("CLAWDBOT_JWT_MODELS_CLAIM", "clawdbot_models")
CLAWDBOT_JWT_DEFAULT_MODELS = _jwt_default_models()
CLAWDBOT_JWT_GROUPS_CLAIM = env_str("CLAWDBOT_JWT_GROUPS_CLAIM", "groups")
CLAWDBOT_JWT_GROUP_MODELS = env_names_map("CLAWDBOT_JWT_GROUP_MODELS")
CLAWDBOT_JWT_RPM_CLAIM = env_str("CLAWDBOT_JWT_RPM_CLAIM", "clawdbot_rpm")
CLAWDBOT_JWT_TPM_CLAIM = env_str("CLAWDBOT_JWT_TPM_CLAIM", "clawdbot_tpm")
CLAWDBOT_JWT_DEFAULT_RPM = env_int("CLAWDBOT_JWT_DEFAULT_RPM", 0, minimum=0)
CLAWDBOT_JWT_DEFAULT_TPM = env_int("CLAWDBOT_JWT_DEFAULT_TPM", 0, minimum=0)
if CLAWDBOT_JWT_JWKS_URL and not (CLAWDBOT_JWT_ISSUER and CLAWDBOT_JWT_AUDIENCE):
    # An identity provider's keys sign tokens for every application it serves: only the
    # issuer and the audience say that a token was meant for this gateway.
    raise ConfigError("CLAWDBOT_JWT_JWKS_URL needs CLAWDBOT_JWT_ISSUER and CLAWDBOT_JWT_AUDIENCE")
if not CLAWDBOT_JWT_ENABLED:
    for _name in sorted(os.environ):
        if _name.startswith("CLAWDBOT_JWT_") and os.environ[_name]:
            raise ConfigError(
                f"{_name} is set, but single sign-on is off: set CLAWDBOT_JWT_SECRET or "
                "CLAWDBOT_JWT_JWKS_URL"
            )

# The readiness checklist (`clawdbot readiness`, and the gate of `serve --production`).
CLAWDBOT_READY_MAX_GPU_MEMORY_PCT = env_float(
    "CLAWDBOT_READY_MAX_GPU_MEMORY_PCT", 85.0, minimum=1.0
)
CLAWDBOT_READY_SMOKE_REQUESTS = env_int("CLAWDBOT_READY_SMOKE_REQUESTS", 100, minimum=1)
CLAWDBOT_READY_SMOKE_MAX_TOKENS = env_int("CLAWDBOT_READY_SMOKE_MAX_TOKENS", 16, minimum=1)
CLAWDBOT_READY_MAX_ERROR_RATE = env_float("CLAWDBOT_READY_MAX_ERROR_RATE", 0.005, minimum=0.0)
if CLAWDBOT_READY_MAX_GPU_MEMORY_PCT > 100 or CLAWDBOT_READY_MAX_ERROR_RATE > 1:
    raise ConfigError(
        "CLAWDBOT_READY_MAX_GPU_MEMORY_PCT is a percentage (at most 100) and "
        "CLAWDBOT_READY_MAX_ERROR_RATE a fraction (at most 1)"
    )
# P95 limits by GPU class: cards under 40 GB (24 GB class) and cards of 40 GB and up.
CLAWDBOT_READY_P95_SMALL_GPU_S = env_float("CLAWDBOT_READY_P95_SMALL_GPU_S", 4.5, minimum=0.01)
CLAWDBOT_READY_P95_LARGE_GPU_S = env_float("CLAWDBOT_READY_P95_LARGE_GPU_S", 2.8, minimum=0.01)
# Model storage shared by the GPU hosts (NFS, say), checked readable and writable; empty: none.
CLAWDBOT_SHARED_MODEL_DIR = env_str("CLAWDBOT_SHARED_MODEL_DIR", "")
