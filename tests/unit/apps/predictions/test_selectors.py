"""The API's registry cache: one reload per model at a time, shared by the requests waiting;
the last routes while the database is unreachable."""

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from pytest_django import Settings

from apps.predictions import selectors
from apps.predictions.errors import ApiError
from apps.predictions.selectors import Route, ServedModel, served_model_get
from tests.conftest import database_unreachable


def test_concurrent_requests_share_one_reload(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    settings.INFERENCE_REGISTRY_CACHE_S = 60.0
    calls = []

    def slow_load(name: str, version: int | None) -> Route:
        calls.append(threading.get_ident())
        time.sleep(0.05)  # a database query
        return Route(ServedModel(name=name, version=3, signature={}))

    monkeypatch.setattr(selectors, "_route_load", slow_load)
    selectors._cache.pop(("shared", None), None)

    async def many() -> list[ServedModel]:
        return await asyncio.gather(*(served_model_get(name="shared") for _ in range(50)))

    served = asyncio.run(many())
    assert {s.version for s in served} == {3}
    assert len(calls) == 1
    assert asyncio.run(served_model_get(name="shared")).version == 3 and len(calls) == 1  # cached


@pytest.mark.django_db(transaction=True)
def test_routes_outlive_an_unreachable_database(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The last route loaded keeps serving (asked again every DATABASE_RETRY_S); a route never
    loaded and a readiness list never read answer 503."""
    settings.INFERENCE_REGISTRY_CACHE_S = 0.0
    monkeypatch.setattr(selectors, "DATABASE_RETRY_S", 0.0)
    live = Route(ServedModel(name="outage", version=4, signature={}))
    with monkeypatch.context() as loaded:
        loaded.setattr(selectors, "_route_load", lambda name, version: live)
        asyncio.run(served_model_get(name="outage"))
    monkeypatch.setattr(selectors, "_routes_last", None)
    outage = database_unreachable()

    async def scenario() -> tuple[ServedModel, ApiError, ApiError, list[Route]]:
        await sync_to_async(outage.__enter__)()  # in the thread that queries
        try:
            served = await served_model_get(name="outage")
            with pytest.raises(ApiError) as unseen:
                await served_model_get(name="never-loaded")
            with pytest.raises(ApiError) as unread:
                await selectors.routes_list()
            selectors._routes_last = [live]  # as if read before the outage
            return served, unseen.value, unread.value, await selectors.routes_list()
        finally:
            await sync_to_async(outage.__exit__)(None, None, None)

    served, unseen, unread, routes = asyncio.run(scenario())
    assert served == live.live
    assert unseen.status == unread.status == 503 and unseen.headers["Retry-After"] == "1"
    assert routes == [live]
    # Back: read from the database again (nothing is deployed in the test database).
    with pytest.raises(ApiError) as gone:
        asyncio.run(served_model_get(name="outage"))
    assert gone.value.status == 404


def test_unpinned_requests_fall_back_to_the_last_good_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live v7 loads nowhere and its previous (v6) is broken too: v5, the last version that
    served here, takes the requests until v7 is served; looked at again soon."""
    live, previous, good = (ServedModel(name="fallback", version=v, signature={}) for v in (7, 6, 5))
    route = Route(live, previous, good)
    ready = {5}
    monkeypatch.setattr(selectors, "_route_load", lambda name, version: route)

    async def served_ready(served: ServedModel) -> bool:
        return served.version in ready

    monkeypatch.setattr(selectors, "served_model_ready", served_ready)
    monkeypatch.setattr(selectors, "SWITCH_RECHECK_S", 0.0)
    selectors._cache.pop(("fallback", None), None)

    assert route.fallbacks == [previous, good]
    assert asyncio.run(served_model_get(name="fallback")).version == 5
    assert asyncio.run(selectors.route_servable(route))
    ready.add(7)
    assert asyncio.run(served_model_get(name="fallback")).version == 7
    assert Route(live, live, live).fallbacks == []
