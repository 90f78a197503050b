"""The kill window (issue #15, fault 2): consumers SIGKILLed right after a pop, before kombu's
bookkeeping, dozens of times in one run (bench/delivery.py). With kombu's own Redis transport each
such kill loses the message; with the reliable-queue pop (BLMOVE into a per-consumer list) none is
lost. Messages are counted in Redis by the consumers themselves."""

import pytest

from bench.delivery import trial


# "reliable-levels": the same pop as a Lua script over the platform's priority-level lists.
@pytest.mark.parametrize("transport", ["reliable", "reliable-levels"])
def test_no_message_is_lost_when_consumers_die_right_after_the_pop(redis_server: str, transport: str) -> None:
    result = trial(redis_server, transport, messages=1500, after_pop=0.02, before_ack=0.005)
    print(result)
    assert result.kills_after_pop >= 10  # the window was hit many times
    assert result.lost == 0
    # A kill before the ack runs that message again; nothing else does.
    assert result.duplicated <= result.kills_after_pop + result.kills_before_ack


def test_kombus_own_transport_loses_a_message_at_that_instant(redis_server: str) -> None:
    """The control: the same faults hit the window of the stock transport."""
    result = trial(redis_server, "kombu", messages=600, after_pop=0.02, before_ack=0)
    print(result)
    assert result.kills_after_pop >= 3
    assert result.lost >= 1
