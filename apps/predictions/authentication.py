"""Bearer API keys: who a request comes from, looked up with a short cache (transport-neutral)."""

import hashlib
import secrets
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.predictions.errors import ApiError
from apps.predictions.fastpath import db_fresh
from apps.predictions.models import ApiKey

KEY_CACHE_S = 30.0
_cache: dict[str, tuple[float, ApiKey | None]] = {}


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *,
    name: str,
    raw_key: str | None = None,
    models: list[str] | None = None,
    rate_per_second: int | None = None,
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
    now = time.monotonic()
    cached = _cache.get(hashed)
    if cached is None or cached[0] < now:
        key = await sync_to_async(_lookup)(hashed)
        _cache[hashed] = cached = (now + KEY_CACHE_S, key)
    key = cached[1]
    if key is None:
        raise ApiError(
            401, "unauthenticated", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return key
