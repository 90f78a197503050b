"""Bearer API keys: who a request comes from, looked up with a short cache (transport-neutral).

The cache (per process, keyed by the key's sha256, `INFERENCE_API_KEY_CACHE_S`) also carries
predictions through a database outage: when the lookup fails because the database is
unreachable, the last answer for that key stands (and the database is asked again after
`DATABASE_RETRY_S`), so a key that was valid a moment ago keeps working and an unknown one
stays refused. Only a key this process has never seen is answered 503 meanwhile. The price: a
key revoked during the outage works until the database answers again.
"""

import asyncio
import hashlib
import logging
import secrets
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.predictions.errors import ApiError, unavailable
from apps.predictions.fastpath import db_fresh
from apps.predictions.models import ApiKey
from inference_project.errors import DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_MESSAGE

logger = logging.getLogger(__name__)

# While the database is unreachable, ask it again this often per key (not on every request).
DATABASE_RETRY_S = 1.0
_cache: dict[str, tuple[float, ApiKey | None]] = {}
# One lookup per key at a time: requests that find an entry expired wait for the one lookup
# (a database that times out would otherwise hold every one of them for the timeout in turn).
_looking_up: dict[str, asyncio.Future[ApiKey | None]] = {}


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *,
    name: str,
    raw_key: str | None = None,
    models: list[str] | None = None,
    rate_per_second: int | None = None,
    high_priority: bool = False,
) -> tuple[ApiKey, str]:
    """Create a key (or register a given one, e.g. the demo token); returns it and the raw key."""
    raw_key = raw_key or secrets.token_urlsafe(32)
    key, _ = ApiKey.objects.update_or_create(
        hashed_key=api_key_hash(raw_key),
        defaults={
            "name": name,
            "prefix": raw_key[:8],
            "allowed_models": models or [],
            "rate_per_second": rate_per_second,
            "may_use_high_priority": high_priority,
            "is_active": True,
        },
    )
    return key, raw_key


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _lookup(hashed: str) -> ApiKey | None:
    db_fresh()
    return ApiKey.objects.filter(hashed_key=hashed, is_active=True).first()


async def api_key_authenticate(authorization: str) -> ApiKey | None:
    """The key of an `Authorization` value (`Bearer <key>`: an HTTP header or gRPC metadata), or
    ApiError 401. Returns None when authentication is switched off."""
    if not settings.INFERENCE_AUTH_REQUIRED:
        return None
    raw = _bearer(authorization)
    if raw is None:
        raise ApiError(
            401,
            "unauthenticated",
            "send an API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    hashed = api_key_hash(raw)
    cached = _cache.get(hashed)
    key = cached[1] if cached is not None and cached[0] >= time.monotonic() else await _refresh(hashed)
    if key is None:
        raise ApiError(
            401, "unauthenticated", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


async def _refresh(hashed: str) -> ApiKey | None:
    """Look the key up again, or join the lookup already running (in its own task: a request
    cancelled meanwhile does not cancel it for the others)."""
    task = _looking_up.get(hashed)
    if task is None:
        task = _looking_up[hashed] = asyncio.ensure_future(_fetch(hashed))
        task.add_done_callback(lambda _: _looking_up.pop(hashed, None))
    return await asyncio.shield(task)


async def _fetch(hashed: str) -> ApiKey | None:
    try:
        key = await sync_to_async(_lookup)(hashed)
    except DATABASE_UNAVAILABLE as exc:
        stale = _cache.get(hashed)
        if stale is None:
            raise unavailable(DATABASE_UNAVAILABLE_MESSAGE) from exc
        logger.warning("API key lookup failed (%s); using the last answer for %.0fs", exc, DATABASE_RETRY_S)
        _cache[hashed] = (time.monotonic() + DATABASE_RETRY_S, stale[1])
        return stale[1]
    _cache[hashed] = (time.monotonic() + settings.INFERENCE_API_KEY_CACHE_S, key)
    return key
