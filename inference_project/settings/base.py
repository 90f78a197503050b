"""Settings shared by every deployment, read from the environment (see `.env.example`)."""

from pathlib import Path
from urllib.parse import quote, urlencode

import django_stubs_ext
import environ

from inference_common.priority import PRIORITY_STEPS
from inference_common.safe_artifacts import PICKLE_ALLOWED_DEFAULT

# The annotations name Django's generic classes (`admin.ModelAdmin[ApiKey]`): make them
# subscriptable at run time, as django-stubs expects.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Django -----------------------------------------------------------------------------------
SECRET_KEY = env("DJANGO_SECRET_KEY", default="dev-insecure-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "apps.models_registry",
    "apps.predictions",
]

# Every middleware here is async-capable, so an async view runs without a thread hop.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = env("DJANGO_ROOT_URLCONF", default="inference_project.urls")
ASGI_APPLICATION = "inference_project.asgi.application"
WSGI_APPLICATION = "inference_project.wsgi.application"
APPEND_SLASH = False

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

# SQLite by default; DATABASE_URL=postgres://... switches to PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # API and workers share the file: wait on locks instead of failing, WAL for concurrent readers.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A database host cut off must fail a query in seconds (libpq waits for the OS's TCP timeout,
    # minutes): the API then answers from its caches, registry writes 503. The URL's
    # ?connect_timeout= wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT_S", default=2)
    )
# Keep connections for a minute; each use checks them first (the fast path has no request edges),
# so one broken by a database restart is replaced, not failed on.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# How long the API trusts an API key it looked up; while the database is unreachable the last
# answer keeps standing (apps/predictions/authentication.py).
INFERENCE_API_KEY_CACHE_S = env.float("INFERENCE_API_KEY_CACHE_S", default=30.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# uvicorn serves no static files; locally Django serves the collected admin assets itself.
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

# Registry endpoints: staff sign in to the admin (session) or send `Authorization: Token <key>`
# (create one with `manage.py drf_create_token <user>`).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "EXCEPTION_HANDLER": "inference_project.drf.exception_handler",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The registry's part of /api/schema is generated from its serializers (inference_project/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "PATH_CONVERTER_OVERRIDES": {"slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}},
}

# --- Redis and Celery -------------------------------------------------------------------------
# REDIS_URL wins; otherwise it is built from host, port, password and TLS settings. With TLS the
# server certificate is verified against REDIS_TLS_CA_CERTS (or the system's CAs).
REDIS_HOST = env("REDIS_HOST", default="127.0.0.1")
REDIS_PORT = env.int("REDIS_PORT", default=6379)
REDIS_PASSWORD = env("REDIS_PASSWORD", default="")
REDIS_TLS = env.bool("REDIS_TLS", default=False)
REDIS_TLS_CA_CERTS = env("REDIS_TLS_CA_CERTS", default="")


def _redis_url() -> str:
    auth = f":{quote(REDIS_PASSWORD, safe='')}@" if REDIS_PASSWORD else ""
    if not REDIS_TLS:
        return f"redis://{auth}{REDIS_HOST}:{REDIS_PORT}/0"
    query = {"ssl_cert_reqs": "required"}
    if REDIS_TLS_CA_CERTS:
        query["ssl_ca_certs"] = REDIS_TLS_CA_CERTS
    return f"rediss://{auth}{REDIS_HOST}:{REDIS_PORT}/0?{urlencode(query)}"


REDIS_URL = env("REDIS_URL", default=_redis_url())


def _sentinel_address(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return (host, int(port)) if host else (port, 26379)


# Redis Sentinel: REDIS_SENTINELS=host:port,host:port,... and REDIS_SENTINEL_MASTER=<name> switch
# every Redis client (broker, results, the API's and the workers' own clients, Flower) to the
# master the Sentinels name, followed across failovers. REDIS_PASSWORD stays the data nodes'
# password; REDIS_SENTINEL_PASSWORD is the Sentinels' own (`requirepass` in sentinel.conf).
REDIS_SENTINELS = [_sentinel_address(a) for a in env.list("REDIS_SENTINELS", default=[])]
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", default="")
REDIS_SENTINEL_PASSWORD = env("REDIS_SENTINEL_PASSWORD", default="")
if REDIS_SENTINELS and not REDIS_SENTINEL_MASTER:
    raise environ.ImproperlyConfigured("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the master")
if REDIS_SENTINELS and REDIS_TLS:
    # kombu, Celery and redis-py each take TLS for Sentinel differently; not wired up yet, and a
    # silent fall-back to plain TCP would be worse than refusing to start.
    raise environ.ImproperlyConfigured("REDIS_TLS with REDIS_SENTINELS is not supported")
# Options of the connections to the Sentinels themselves (redis-py's `sentinel_kwargs`; kombu and
# Celery pass the same dict through): their password, and timeouts as short as the data nodes'.
REDIS_SENTINEL_KWARGS = {
    "socket_connect_timeout": 0.5,
    "socket_timeout": 0.5,
    **({"password": REDIS_SENTINEL_PASSWORD} if REDIS_SENTINEL_PASSWORD else {}),
}


def _sentinel_url(path: str = "") -> str:
    """kombu's and Celery's form: one `sentinel://` URL per Sentinel, joined by `;`; the data
    nodes' password rides in each (both read it from there for the master)."""
    auth = f":{quote(REDIS_PASSWORD, safe='')}@" if REDIS_PASSWORD else ""
    return ";".join(f"sentinel://{auth}{host}:{port}{path}" for host, port in REDIS_SENTINELS)


CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=_sentinel_url() if REDIS_SENTINELS else REDIS_URL)
# kombu's Redis transport, keeping one client per connection pool instead of building one per
# publish, ack and event (inference_project/broker.py); its Sentinel twin with REDIS_SENTINELS.
# Empty: the URL's own transport.
CELERY_BROKER_TRANSPORT = (
    env(
        "CELERY_BROKER_TRANSPORT",
        default="inference_project.broker:SentinelTransport"
        if REDIS_SENTINELS
        else "inference_project.broker:Transport",
    )
    or None
)
# Redis, through a backend class that skips Celery's per-send SUBSCRIBE (see celery_backend.py).
CELERY_RESULT_BACKEND = env(
    "CELERY_RESULT_BACKEND",
    default=f"inference_project.celery_backend.ProducerSentinelBackend+{_sentinel_url('/0')}"
    if REDIS_SENTINELS
    else f"inference_project.celery_backend.ProducerRedisBackend+{REDIS_URL}",
)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = (
    {"master_name": REDIS_SENTINEL_MASTER, "sentinel_kwargs": REDIS_SENTINEL_KWARGS}
    if REDIS_SENTINELS
    else {}
)
# Tensors travel as raw bytes inside msgpack, never as JSON float lists.
CELERY_TASK_SERIALIZER = "msgpack"
CELERY_RESULT_SERIALIZER = "msgpack"
CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
CELERY_RESULT_ACCEPT_CONTENT = ["msgpack", "json"]
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES_S", default=3600)
CELERY_RESULT_EXTENDED = False
# At-least-once delivery: ack after the task ran, requeue when a child dies mid-task.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT_S", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT_S", default=90)
# A new child imports TensorFlow and loads its models before it reports up; Celery's 4 s default
# killed replacement children in a loop on a busy host (seen after SIGKILLs in the fault tests).
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.float("CELERY_WORKER_PROC_ALIVE_TIMEOUT_S", default=60.0)
# Redelivery (docs/reliability.md). kombu records each message a worker took in an `unacked`
# hash; every consumer sweeps it every second and puts back what was taken more than the
# visibility timeout ago, so a lost worker host's messages run elsewhere within ~7 s. An inference
# batch takes milliseconds; one still running after the timeout runs again (its answer is the one
# stored first). The platform worker's tasks (gate evaluation: minutes) keep their own unacked keys
# and an hour's timeout, so the inference workers' sweep never requeues a running gate. The mutex
# that serialises sweeps expires in 5 s, so a host lost mid-sweep does not stop them for long.
_PLATFORM_CONSUMER = env("INFERENCE_WORKER_ROLE", default="") == "platform"
_UNACKED = "unacked.platform" if _PLATFORM_CONSUMER else "unacked"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600 if _PLATFORM_CONSUMER else 6),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL_S", default=1),
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 5,
    "unacked_key": _UNACKED,
    "unacked_index_key": f"{_UNACKED}_index",
    "unacked_mutex_key": f"{_UNACKED}_mutex",
    # One Redis list per priority level of a queue (inference_common/priority.py), which the
    # workers' reliable pop (inference_project/reliable_queue.py) takes from highest first; a level
    # with messages waiting is passed over at most INFERENCE_PRIORITY_MAX_SKIPS pops in a row.
    "priority_steps": PRIORITY_STEPS,
    "priority_max_skips": env.int("INFERENCE_PRIORITY_MAX_SKIPS", default=10),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
if REDIS_SENTINELS:
    # Read by kombu's SentinelChannel: which master to follow, and how to reach the Sentinels.
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": REDIS_SENTINEL_KWARGS,
    }
# A request is accepted only once this many replicas hold its message: after each batch publish
# the API writes once more and WAITs on that connection (apps/predictions/replication.py). When no
# replica acknowledges within the timeout, a batch with an async job is answered 503 with
# Retry-After (not a 202 that a failover could lose) and sync requests go ahead unprotected until
# a replica is back. 0: no WAIT. The Sentinel layout (a primary and a replica) sets 1.
# INFERENCE_ASYNC_REPLICAS* are the names these had when only async jobs waited.
INFERENCE_PUBLISH_REPLICAS = env.int(
    "INFERENCE_PUBLISH_REPLICAS", default=env.int("INFERENCE_ASYNC_REPLICAS", default=0)
)
INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS = env.int(
    "INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS", default=env.int("INFERENCE_ASYNC_REPLICA_TIMEOUT_MS", default=500)
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The API must fail fast (503) when Redis is down rather than retrying for long.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Task events from the workers (Flower's task list): off by default, by the numbers. They cost the
# worker parent's publishes and Flower's consumption: 3 % of the machine's CPU per digits answer
# and 7-24 % per image of the simulated accelerator in paired runs (docs/benchmarks.md, "Celery
# task events"). Flower's worker view stays either way; `true` brings the task list back (make
# run then starts Flower with events enabled). The producer's "task-sent" event is off too: one
# more Redis publish per batch, 7 % of the API's CPU at 64 clients.
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = env.bool("CELERY_TASK_SEND_SENT_EVENT", default=False)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Inference platform -----------------------------------------------------------------------
# The environment this deployment serves, and the ordered promotion path.
INFERENCE_ENVIRONMENTS = env.list("INFERENCE_ENVIRONMENTS", default=["dev", "staging", "prod"])
INFERENCE_ENVIRONMENT = env("INFERENCE_ENVIRONMENT", default=INFERENCE_ENVIRONMENTS[0])
# Where artifacts live: a local folder (default) or, later, S3.
ARTIFACTS_ROOT = env.path("ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts"))
# How long a synchronous request waits for its result before answering 504.
INFERENCE_SYNC_TIMEOUT_S = env.float("INFERENCE_SYNC_TIMEOUT_S", default=30.0)
# An Idempotency-Key claimed by a request not yet published is held this long, then a retry may
# claim it (the first attempt's API host lost): longer than a publish takes (apps/predictions/idempotency.py).
INFERENCE_IDEMPOTENCY_PENDING_S = env.float("INFERENCE_IDEMPOTENCY_PENDING_S", default=5.0)
# Prediction requests larger than this answer 413 (enforced once, in apps/predictions/fastpath.py);
# more rows than this in one request answer 400.
INFERENCE_MAX_BODY_BYTES = env.int("INFERENCE_MAX_BODY_BYTES", default=8 * 1024 * 1024)
INFERENCE_MAX_BATCH_ROWS = env.int("INFERENCE_MAX_BATCH_ROWS", default=1024)
# A refused body is read and discarded up to this size before the 413 is sent, so a client that
# writes its whole body before reading (urllib, requests) gets the answer instead of a reset.
INFERENCE_BODY_DRAIN_BYTES = env.int("INFERENCE_BODY_DRAIN_BYTES", default=512 * 1024 * 1024)
# The Open Inference Protocol over gRPC, served by every API process on its event loop
# (apps/predictions/transports/v2_grpc.py); GRPC_PORT 0: no gRPC. Several API processes on one host
# share the port (SO_REUSEPORT); a message above GRPC_MAX_MESSAGE_BYTES either way is refused
# (RESOURCE_EXHAUSTED); calls in flight get GRPC_GRACE_S at shutdown.
GRPC_HOST = env("GRPC_HOST", default=env("API_HOST", default="127.0.0.1"))
GRPC_PORT = env.int("GRPC_PORT", default=8081)
GRPC_REUSE_PORT = env.bool("GRPC_REUSE_PORT", default=env.int("API_WORKERS", default=1) > 1)
GRPC_MAX_MESSAGE_BYTES = env.int("GRPC_MAX_MESSAGE_BYTES", default=INFERENCE_MAX_BODY_BYTES)
GRPC_GRACE_S = env.float("GRPC_GRACE_S", default=10.0)
# Admission control, checked before anything is enqueued: requests per second per API key (429),
# and messages waiting in a model's queue (503). Both answer with Retry-After.
INFERENCE_THROTTLE_PER_SECOND = env.int("INFERENCE_THROTTLE_PER_SECOND", default=2000)
INFERENCE_MAX_QUEUE_DEPTH = env.int("INFERENCE_MAX_QUEUE_DEPTH", default=5000)
# Whether the demo key (INFERENCE_DEMO_TOKEN) may send priority "high" requests; other keys say so
# in the admin (API keys) or with `manage.py create_api_key --high-priority`.
INFERENCE_DEMO_KEY_HIGH_PRIORITY = env.bool("INFERENCE_DEMO_KEY_HIGH_PRIORITY", default=True)
# Dynamic batching: at most this many batches per model wait for answers in one API process; the
# next batch keeps filling meanwhile (max_batch_size / max_delay_ms are set per model).
INFERENCE_MAX_INFLIGHT_BATCHES = env.int("INFERENCE_MAX_INFLIGHT_BATCHES", default=2)
# A batch whose tensors exceed this many bytes sends them beside the task, under Redis keys
# (inference_common/tensor_store.py), instead of inside the broker message.
INFERENCE_TENSOR_OFFLOAD_BYTES = env.int("INFERENCE_TENSOR_OFFLOAD_BYTES", default=64 * 1024)
# A Redis without persistence for the offloaded tensors of sync requests (redis:// or unix://);
# empty: they go to the broker's Redis, with its AOF. `make run` starts one (deploy/bin/redis-tensors).
INFERENCE_TENSOR_REDIS_URL = env("INFERENCE_TENSOR_REDIS_URL", default="")
# Bytes of shared memory (/dev/shm) each API process keeps for the offloaded tensors of sync
# requests, read there by workers on the same host (inference_common/shm_tensors.py); 0: none.
# Only where every worker of the API's models runs on its host: `make run` sets 128 MiB. The
# region is reserved (memory) when the process first offloads a tensor.
INFERENCE_TENSOR_SHM_BYTES = env.int("INFERENCE_TENSOR_SHM_BYTES", default=0)
# Prediction and model routes require `Authorization: Bearer <api key>`.
INFERENCE_AUTH_REQUIRED = env.bool("INFERENCE_AUTH_REQUIRED", default=True)
# How long the API trusts its in-process copy of the registry (deployed versions, signatures).
INFERENCE_REGISTRY_CACHE_S = env.float("INFERENCE_REGISTRY_CACHE_S", default=2.0)
# A worker child refreshes its "serving model X version N" mark this often; marks older than
# the TTL no longer count for readiness.
INFERENCE_HEARTBEAT_S = env.float("INFERENCE_HEARTBEAT_S", default=2.0)
INFERENCE_HEARTBEAT_TTL_S = env.float("INFERENCE_HEARTBEAT_TTL_S", default=10.0)
# A live version that a worker cannot load (the load itself failed: not a storage outage or a
# slow load) and that no worker serves is rolled back to the deployment's last good version,
# by itself, and recorded (actor "auto-rollback"). Off: the last good version still serves
# unpinned requests, and an operator rolls back.
INFERENCE_AUTO_ROLLBACK = env.bool("INFERENCE_AUTO_ROLLBACK", default=True)

# LOG_FORMAT=json (default): one JSON object a line (inference_project/logs.py), for ELK;
# LOG_FORMAT=plain for people reading a terminal.
LOG_FORMAT = env("LOG_FORMAT", default="json")
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "inference_project.logs.JsonFormatter"},
    },
    "filters": {"skip_expected": {"()": "inference_project.logging_filters.SkipExpectedUnavailable"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "WARNING", "filters": ["skip_expected"]},
        # uvicorn configures its own handlers before Django starts; route them through ours.
        "uvicorn": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "uvicorn.error": {"level": LOG_LEVEL},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        # Celery logs two lines per task ("received", "succeeded"); the worker writes its own
        # line per request instead (workers/serving.py).
        "celery.worker.strategy": {"level": env("CELERY_TASK_LOG_LEVEL", default="WARNING")},
        "celery.app.trace": {"level": env("CELERY_TASK_LOG_LEVEL", default="WARNING")},
    },
}

# Release pipeline: SNS topic per environment, e.g. "dev=arn:aws:sns:...:release-dev.fifo,prod=...".
# Environments without a topic keep their events in the outbox.
RELEASE_SNS_TOPIC_ARNS = env.dict("RELEASE_SNS_TOPIC_ARNS", default={})
# Pending events are also swept this often by the platform worker's beat (seconds).
RELEASE_OUTBOX_SWEEP_S = env.float("RELEASE_OUTBOX_SWEEP_S", default=60.0)
# Rollouts (docs/registry.md): the platform worker analyses each running one this often, and a
# step lasts at least INFERENCE_ROLLOUT_DWELL_S unless the rollout sets its own.
INFERENCE_ROLLOUT_ANALYSIS_S = env.float("INFERENCE_ROLLOUT_ANALYSIS_S", default=5.0)
INFERENCE_ROLLOUT_DWELL_S = env.float("INFERENCE_ROLLOUT_DWELL_S", default=60.0)
# Shadow rollouts (apps/predictions/shadow.py): a copy of an answered request is shed when this
# API process already has INFERENCE_SHADOW_MAX_INFLIGHT copies out or the model's queue holds
# INFERENCE_SHADOW_MAX_QUEUE_DEPTH batches; a copy not answered within INFERENCE_SHADOW_TIMEOUT_S
# is given up.
INFERENCE_SHADOW_MAX_INFLIGHT = env.int("INFERENCE_SHADOW_MAX_INFLIGHT", default=256)
INFERENCE_SHADOW_MAX_QUEUE_DEPTH = env.int("INFERENCE_SHADOW_MAX_QUEUE_DEPTH", default=16)
INFERENCE_SHADOW_TIMEOUT_S = env.float("INFERENCE_SHADOW_TIMEOUT_S", default=10.0)
# Copies wait this long for others to share their batch (apps/predictions/batching.py), or leave
# full: a few large batches instead of one per copy. 1000 against 200: live p50 with a 100 % shadow
# over without 1.01 and 1.05 against 1.10 and 1.12 (python -m bench.shadow, docs/registry.md).
INFERENCE_SHADOW_BATCH_DELAY_MS = env.float("INFERENCE_SHADOW_BATCH_DELAY_MS", default=1000.0)
CELERY_BEAT_SCHEDULE = {
    "publish-release-outbox": {
        "task": "release.publish_outbox",
        "schedule": RELEASE_OUTBOX_SWEEP_S,
        "options": {"queue": "platform", "expires": RELEASE_OUTBOX_SWEEP_S},
    },
    "analyse-rollouts": {
        "task": "registry.analyse_rollouts",
        "schedule": INFERENCE_ROLLOUT_ANALYSIS_S,
        "options": {"queue": "platform", "expires": INFERENCE_ROLLOUT_ANALYSIS_S},
    },
}
# "inference" workers load models; the "platform" worker runs registry housekeeping only.
INFERENCE_WORKER_ROLE = env("INFERENCE_WORKER_ROLE", default="inference")
# Models a worker process preloads (empty: every model deployed in its environment). The launcher
# starts one worker per model queue with this set to that model.
INFERENCE_WORKER_MODELS = env.list("INFERENCE_WORKER_MODELS", default=[])
# TensorFlow threads per worker child: "auto" splits the cores among the children when there are
# several (workers/placement.py), a number sets it, "tf" keeps TensorFlow's defaults.
INFERENCE_CHILD_THREADS = env("INFERENCE_CHILD_THREADS", default="auto")
# After a promotion/rollback, a worker unloads the replaced version once it has been idle this long.
INFERENCE_SWAP_GRACE_S = env.float("INFERENCE_SWAP_GRACE_S", default=5.0)
# A new version still loading after this long is reported to the registry as a failed load.
INFERENCE_LOAD_TIMEOUT_S = env.float("INFERENCE_LOAD_TIMEOUT_S", default=120.0)
# Each inference worker serves Prometheus metrics on this port (needs PROMETHEUS_MULTIPROC_DIR).
INFERENCE_WORKER_METRICS_PORT = env.int("INFERENCE_WORKER_METRICS_PORT", default=9464)
INFERENCE_WORKER_METRICS_HOST = env("INFERENCE_WORKER_METRICS_HOST", default="0.0.0.0")  # noqa: S104 (pods)
# The platform worker serves the rollout figures on this port (apps/models_registry/metrics.py).
INFERENCE_PLATFORM_METRICS_PORT = env.int("INFERENCE_PLATFORM_METRICS_PORT", default=9463)
# Drift detection (workers/monitoring.py): each worker child compares its last WINDOW rows per
# version with the version's reference statistics every EVAL_S seconds, from MIN_ROWS rows on.
INFERENCE_DRIFT_WINDOW = env.int("INFERENCE_DRIFT_WINDOW", default=1000)
INFERENCE_DRIFT_MIN_ROWS = env.int("INFERENCE_DRIFT_MIN_ROWS", default=300)
INFERENCE_DRIFT_EVAL_S = env.float("INFERENCE_DRIFT_EVAL_S", default=10.0)
INFERENCE_DRIFT_PSI_THRESHOLD = env.float("INFERENCE_DRIFT_PSI_THRESHOLD", default=0.2)
# Each worker child adds every batch's figures (requests, errors, latency, confidence) to its
# version's live stats in Redis, 5 s buckets kept an hour (inference_common/version_stats.py):
# what a rollout's analysis compares. One pipelined round trip per batch, after its answers.
INFERENCE_VERSION_STATS = env.bool("INFERENCE_VERSION_STATS", default=True)

# --- Model registry -----------------------------------------------------------------------------
# Artifact storage: "local" (ARTIFACTS_ROOT) or "s3" (bucket/prefix; endpoint and credentials come
# from boto3's usual variables: AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, ...).
ARTIFACT_STORAGE = env("ARTIFACT_STORAGE", default="local")
ARTIFACTS_S3_BUCKET = env("ARTIFACTS_S3_BUCKET", default="")
ARTIFACTS_S3_PREFIX = env("ARTIFACTS_S3_PREFIX", default="models/")
ARTIFACTS_S3_MULTIPART_MB = env.int("ARTIFACTS_S3_MULTIPART_MB", default=8)
# Where hosts keep downloaded artifacts, by checksum.
ARTIFACT_CACHE_DIR = env.path("ARTIFACT_CACHE_DIR", default=str(VAR_DIR / "artifact-cache"))
# Companion artifacts up to this size are cached in Redis, keyed by sha256.
ARTIFACT_REDIS_MAX_BYTES = env.int("ARTIFACT_REDIS_MAX_BYTES", default=4 * 1024 * 1024)
# Stored bytes of versions deployed nowhere are pruned, keeping the newest N such versions.
ARTIFACT_RETENTION_VERSIONS = env.int("ARTIFACT_RETENTION_VERSIONS", default=3)
# Upload limits for the registry's REST endpoint.
ARTIFACT_MAX_UPLOAD_BYTES = env.int("ARTIFACT_MAX_UPLOAD_BYTES", default=512 * 1024 * 1024)
# Gate: the candidate loads in a separate process and scores its validation set within this time.
PROMOTION_GATE_TIMEOUT_S = env.int("PROMOTION_GATE_TIMEOUT_S", default=180)
# Where that process runs: "local" (beside the caller) or "worker" (the platform worker; the API
# image has no TensorFlow, so deployments set this).
PROMOTION_GATE_RUNNER = env("PROMOTION_GATE_RUNNER", default="local")
# After registration, compute the version's reference statistics on its validation set (drift
# detection compares live traffic with them), with the same runner as the gates.
REGISTRY_PROFILE_ON_REGISTER = env.bool("REGISTRY_PROFILE_ON_REGISTER", default=True)

# --- Artifacts that cannot run code, and signed versions (docs/registry.md, "Model of trust") ----
# Every global a preprocessing pickle names must be on this list (exact module.name); the default
# is numpy arrays and dtypes, scikit-learn's preprocessing transformers and plain containers.
# INFERENCE_PICKLE_ALLOWED_EXTRA adds names, e.g. a transformer of your own package.
INFERENCE_PICKLE_ALLOWED_GLOBALS = [
    *PICKLE_ALLOWED_DEFAULT,
    *env.list("INFERENCE_PICKLE_ALLOWED_EXTRA", default=[]),
]
# Keras objects from outside Keras a model may hold, by registered name ("package>Name"); the
# workers must be able to import them. Lambda layers are never allowed: a superuser may trust one
# version with a written reason instead.
INFERENCE_KERAS_ALLOWED_OBJECTS = env.list("INFERENCE_KERAS_ALLOWED_OBJECTS", default=[])
# Validation sets (.csv, .xlsx): numbers only, at most this many rows and bytes (an .xlsx unpacked).
INFERENCE_TABLE_MAX_ROWS = env.int("INFERENCE_TABLE_MAX_ROWS", default=1_000_000)
INFERENCE_TABLE_MAX_BYTES = env.int("INFERENCE_TABLE_MAX_BYTES", default=256 * 1024 * 1024)
# Public keys whose signatures an environment trusts: INFERENCE_TRUSTED_KEYS_<ENV>=name=path,...
# (e.g. INFERENCE_TRUSTED_KEYS_PROD=release=/etc/inference/keys/release.pub). The name is the
# signer the admin and the release events show.
INFERENCE_TRUSTED_KEYS = {
    environment: dict(env.dict(f"INFERENCE_TRUSTED_KEYS_{environment.upper()}", default={}))
    for environment in INFERENCE_ENVIRONMENTS
}
# In these environments a valid signature from one of their trusted keys is a gate, and workers
# verify it again before every load.
INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS = env.list("INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS", default=[])
