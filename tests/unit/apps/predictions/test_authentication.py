"""API keys while the database is unreachable: a key seen before keeps working on its last
answer, one never seen answers 503, and the database is asked again once it is back."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from apps.predictions import authentication
from apps.predictions.authentication import api_key_authenticate, api_key_create
from apps.predictions.errors import ApiError
from apps.predictions.models import ApiKey
from tests.conftest import database_unreachable

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_known_key_keeps_working_while_the_database_is_unreachable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE_API_KEY_CACHE_S = 0.0  # every request asks the database
    monkeypatch.setattr(authentication, "DATABASE_RETRY_S", 0.0)
    key, raw = api_key_create(name="outage")
    outage = database_unreachable()

    async def scenario() -> tuple[ApiKey | None, ApiKey | None, ApiError]:
        before = await api_key_authenticate(f"Bearer {raw}")
        # The lookups run in sync_to_async's thread: the database is unreachable there.
        await sync_to_async(outage.__enter__)()
        try:
            during = await api_key_authenticate(f"Bearer {raw}")
            with pytest.raises(ApiError) as unseen:
                await api_key_authenticate("Bearer a-key-this-process-never-saw")
        finally:
            await sync_to_async(outage.__exit__)(None, None, None)
        return before, during, unseen.value

    before, during, unseen = asyncio.run(scenario())
    assert before is not None and during is not None and before.pk == during.pk == key.pk
    assert unseen.status == 503 and unseen.headers["Retry-After"] == "1"

    # Back: the database decides again (a key revoked meanwhile is refused).
    ApiKey.objects.filter(pk=key.pk).update(is_active=False)
    with pytest.raises(ApiError) as revoked:
        asyncio.run(api_key_authenticate(f"Bearer {raw}"))
    assert revoked.value.status == 401


def test_concurrent_requests_share_one_lookup(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.INFERENCE_API_KEY_CACHE_S = 60.0
    _, raw = api_key_create(name="shared")
    lookups = []
    real = authentication._lookup

    def counted(hashed: str) -> ApiKey | None:
        lookups.append(hashed)
        return real(hashed)

    monkeypatch.setattr(authentication, "_lookup", counted)

    async def many() -> list[ApiKey | None]:
        return await asyncio.gather(*(api_key_authenticate(f"Bearer {raw}") for _ in range(20)))

    keys = asyncio.run(many())
    assert len({k.pk for k in keys if k is not None}) == 1 and None not in keys
    assert len(lookups) == 1
