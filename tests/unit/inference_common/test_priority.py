"""Priority levels: what a request may say, and where each level waits on the broker."""

import pytest

from inference_common.priority import (
    HIGH,
    LOW,
    MESSAGE_PRIORITY,
    NORMAL,
    PRIORITY_STEPS,
    doorbell_key,
    level_of_step,
    level_parse,
    queue_list,
    queue_lists,
)


def test_names_and_tritons_numbers_name_a_level() -> None:
    assert [level_parse(v) for v in ("high", " Normal ", "LOW")] == [HIGH, NORMAL, LOW]
    numbered = [level_parse(v) for v in (0, 1, 2, 3, "0", "1", "3")]
    assert numbered == [NORMAL, HIGH, NORMAL, LOW, NORMAL, HIGH, LOW]
    for bad in ("urgent", "", "-1", 4, -1, True, 1.0, None, [1]):
        with pytest.raises(ValueError, match="high, normal, low"):
            level_parse(bad)


def test_each_level_has_its_list_and_normal_keeps_the_queues_name() -> None:
    assert queue_list("inference.digits", NORMAL) == "inference.digits"
    assert queue_lists("q") == ["q\x06\x16high", "q", "q\x06\x16low"]
    assert doorbell_key("q") not in queue_lists("q")
    # A message sent without a priority (kombu and Celery send 0) is a normal one.
    assert MESSAGE_PRIORITY[NORMAL] == 0 and level_of_step(0) == NORMAL
    assert sorted(MESSAGE_PRIORITY.values()) == PRIORITY_STEPS
    assert {level_of_step(MESSAGE_PRIORITY[level]) for level in (HIGH, NORMAL, LOW)} == {HIGH, NORMAL, LOW}
