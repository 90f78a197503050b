"""The API's registry cache: one reload per model at a time, shared by the requests waiting."""

import asyncio
import threading
import time

import pytest
from pytest_django import Settings

from apps.predictions import selectors
from apps.predictions.selectors import Route, ServedModel, served_model_get


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
