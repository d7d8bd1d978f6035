"""Settings from the environment, with embedded defaults that need no service at all.

Defaults: SQLite in DATA_DIR, the in-memory channel layer, the local-memory cache and the built-in
offline upstream. DATABASE_URL, REDIS_URL and OPENAI_BASE_URL / OPENAI_API_KEY switch to real engines.
docs/operations.md lists every variable.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("CHATSITE_DATA_DIR", BASE_DIR / "data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated on first run and kept in DATA_DIR."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        # O_EXCL: two processes starting at once must agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
# Addresses of reverse proxies whose X-Forwarded-For is believed (login throttling, share rate limits).
TRUSTED_PROXIES = envlist("TRUSTED_PROXIES")
if envbool("BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "conversations.middleware.ServerTimingMiddleware",
    "csp.middleware.CSPMiddleware",
    "conversations.middleware.nonce_on_every_page",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "conversations.middleware.MemberPreferencesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

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
                "django.template.context_processors.i18n",
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", DATA_DIR / "chatsite.sqlite3"),
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN,
                # so concurrent writers queue on busy_timeout instead of failing with "database is locked"
                # when a read transaction tries to upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Kept open: closing a WAL connection checkpoints the log, milliseconds every time.
            "CONN_MAX_AGE": None,
            # A file, not memory: live-server tests run daphne in another process on the same database.
            "TEST": {"NAME": os.environ.get("SQLITE_TEST_PATH", str(DATA_DIR / "test-chatsite.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The usage table's covering index (INCLUDE) exists on PostgreSQL only; SQLite builds it without the
# included columns, which is what is wanted there.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

# --- Cache and channel layer ----------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    # Redis Pub/Sub: a group message is one PUBLISH, fanned out to a process's sockets in memory. The
    # core layer's four round trips and a Lua script per message cost 3.2 ms of CPU per delta, and 50
    # streams did not keep up (bench/README.md); this layer needs 0.5-0.7 ms. Nothing is stored: a reply
    # resumes from its snapshot and seq either way.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "conversations.channel_layer.LocalChannelLayer",
            "CONFIG": {"capacity": envint("CHANNEL_CAPACITY", 1000)},
        }
    }

# --- Upstream -------------------------------------------------------------------------------------
# Unset: the run command serves the offline upstream on OFFLINE_UPSTREAM_PORT and registers its models.
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "").rstrip("/")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OFFLINE_UPSTREAM_URL = os.environ.get(
    "OFFLINE_UPSTREAM_URL", f"http://127.0.0.1:{envint('OFFLINE_UPSTREAM_PORT', 8001)}/v1"
)
UPSTREAM_CONNECT_TIMEOUT = float(os.environ.get("UPSTREAM_CONNECT_TIMEOUT", 10))
UPSTREAM_FIRST_BYTE_TIMEOUT = float(os.environ.get("UPSTREAM_FIRST_BYTE_TIMEOUT", 60))
UPSTREAM_IDLE_TIMEOUT = float(os.environ.get("UPSTREAM_IDLE_TIMEOUT", 60))
UPSTREAM_TOTAL_TIMEOUT = float(os.environ.get("UPSTREAM_TOTAL_TIMEOUT", 600))
UPSTREAM_MAX_RETRIES = envint("UPSTREAM_MAX_RETRIES", 2)

# A reply whose process stops renewing its lease for this long is marked interrupted by the sweeper.
REPLY_LEASE_SECONDS = float(os.environ.get("REPLY_LEASE_SECONDS", 30))

# Budgets (conversations/budgets.py): days and months start at midnight here; a request whose answer
# has no max_tokens reserves this many answer tokens until it finishes.
BUDGET_TIME_ZONE = os.environ.get("BUDGET_TIME_ZONE", "") or os.environ.get("TIME_ZONE", "UTC")
BUDGET_ANSWER_TOKENS = envint("BUDGET_ANSWER_TOKENS", 1024)

# A websocket frame larger than this is refused with an error (images go over HTTP).
WEBSOCKET_MAX_FRAME_BYTES = envint("WEBSOCKET_MAX_FRAME_BYTES", 64 * 1024)

# The largest file a member may import conversations from (conversations/transfer.py).
IMPORT_MAX_BYTES = envint("IMPORT_MAX_BYTES", 5 * 1024 * 1024)

# Attached images (conversations/images.py): the largest upload, the most pixels a header may claim
# (checked before decoding), the longest side kept, and the size past which a PNG is stored as JPEG.
IMAGE_MAX_BYTES = envint("IMAGE_MAX_BYTES", 10 * 1024 * 1024)
IMAGE_MAX_PIXELS = envint("IMAGE_MAX_PIXELS", 50_000_000)
IMAGE_MAX_SIDE = envint("IMAGE_MAX_SIDE", 2048)
IMAGE_PNG_MAX_BYTES = envint("IMAGE_PNG_MAX_BYTES", 1536 * 1024)
IMAGES_PER_MESSAGE = envint("IMAGES_PER_MESSAGE", 4)
# Images uploaded and not sent yet that one member may hold (older than a day, they go).
IMAGES_PENDING_PER_MEMBER = envint("IMAGES_PENDING_PER_MEMBER", 50)

# --- Auth and sessions ----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"
LOGIN_THROTTLE_ATTEMPTS = envint("LOGIN_THROTTLE_ATTEMPTS", 5)
LOGIN_THROTTLE_WINDOW = envint("LOGIN_THROTTLE_WINDOW", 300)
# Share links (conversations/sharing.py): lookups that find no usable link, per client address and for
# the whole site, before every share page answers 429 for the rest of the window. The site-wide limit
# is far above the per-address one: were it 20, one visitor's 20 misses would lock every link for
# everyone. 256-bit tokens cannot be guessed anyway; it is only a ceiling against a distributed scan.
SHARE_MISSES_PER_ADDRESS = envint("SHARE_MISSES_PER_ADDRESS", 20)
SHARE_MISSES_GLOBAL = envint("SHARE_MISSES_GLOBAL", 300)
SHARE_MISS_WINDOW = envint("SHARE_MISS_WINDOW", 60)
ACCOUNT_LINK_HOURS = envint("ACCOUNT_LINK_HOURS", 72)
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 14 * 24 * 3600)
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False

# --- Security -------------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT")
# Load balancers poll the health endpoint over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES")
CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        # Model output may name outside images: they are never fetched.
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}

# --- I18n -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------------
STATIC_URL = "static/"
# collectstatic writes here and ServeStatic serves from here when DEBUG is off.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# Front-end packages come from the npm registry through package-lock.json into node_modules/;
# only the files the pages load are exposed, each under vendor/<name>/.
NODE_MODULES = BASE_DIR / "node_modules"
VENDOR_FOLDERS = {
    "marked": "marked/lib",
    "dompurify": "dompurify/dist",
    # The whole dist folder: katex.min.css finds its fonts under fonts/, beside it.
    "katex": "katex/dist",
    # The highlight.js package's es/ files re-export CommonJS; its CDN build is plain ES modules.
    "highlight.js": "@highlightjs/cdn-assets/es",
}
STATICFILES_DIRS = [BASE_DIR / "static"] + [
    (f"vendor/{name}", NODE_MODULES / folder)
    for name, folder in VENDOR_FOLDERS.items()
    if (NODE_MODULES / folder).is_dir()
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
}
SERVESTATIC_KEEP_ONLY_HASHED_FILES = True
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))  # attached images

# --- Logging --------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}
