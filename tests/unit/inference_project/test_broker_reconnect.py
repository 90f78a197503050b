"""The app's broker connections retry a lost broker on short waits (inference_project/
broker_reconnect.py): measured on a real refused connection, as Celery's consumer calls it."""

import pytest
from kombu.exceptions import OperationalError

from inference_project.broker_reconnect import RECONNECT_MAX_S, RECONNECT_START_S, ReconnectingConnection
from inference_project.celery_app import app
from tests.conftest import free_port


def test_every_broker_connection_of_the_app_retries_soon() -> None:
    assert isinstance(app.connection_for_read(), ReconnectingConnection)
    assert isinstance(app.connection_for_write().clone(), ReconnectingConnection)


def test_the_waits_start_short_and_grow_to_the_cap() -> None:
    waits: list[float] = []
    connection = app.connection_for_read(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(OperationalError):
        # What Celery's consumer calls (celery/worker/consumer/consumer.py: ensure_connected);
        # its errback is told each wait before it is slept (3 s in all here).
        connection.ensure_connection(lambda exc, interval: waits.append(interval), 3)
    assert waits == [RECONNECT_START_S, 2 * RECONNECT_START_S, 3 * RECONNECT_START_S]
    assert 3 * RECONNECT_START_S <= RECONNECT_MAX_S
