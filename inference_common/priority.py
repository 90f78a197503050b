"""Request priority: the levels, their Celery message priority, and the Redis list of each.

Three levels. A request says which with `X-Priority` (native and every REST route, gRPC metadata
`x-priority`) or the Open Inference Protocol's `parameters.priority` (REST and gRPC): a name, or
Triton's numbers (1 highest, 0 the default). Which API keys may ask for `high` is a property of the
key (`ApiKey.may_use_high_priority`).

On the broker each level of a model's queue is a Redis list of its own: `normal` keeps the
queue's name (so what watched the queue before still does), the others append kombu's priority
separator and the level. The workers' reliable pop (inference_project/reliable_queue.py) takes
from the highest non-empty one, except that a level passed over `INFERENCE_PRIORITY_MAX_SKIPS`
pops in a row while it had messages waiting is served next: no level starves while a higher one
is saturated.
"""

HIGH, NORMAL, LOW = "high", "normal", "low"
LEVELS = (HIGH, NORMAL, LOW)  # highest first
DEFAULT = NORMAL

# The message priority Celery sends for each level: these numbers only name the level's list
# (`priority_steps`); the pop's order is the levels' order. Normal is 0, what kombu and Celery
# put on every message that names none.
MESSAGE_PRIORITY = {NORMAL: 0, HIGH: 3, LOW: 6}
PRIORITY_STEPS = sorted(MESSAGE_PRIORITY.values())
_LEVEL_OF_STEP = {step: level for level, step in MESSAGE_PRIORITY.items()}
SEPARATOR = "\x06\x16"  # kombu's Redis `sep` for priority lists

# Triton's numbering: 1 is the highest level, larger numbers lower ones, 0 the default.
_NUMBERED = {0: DEFAULT, 1: HIGH, 2: NORMAL, 3: LOW}


def level_parse(value: object) -> str:
    """A level from a header or parameter value: a level's name or Triton's 0-3; ValueError
    saying what is accepted otherwise."""
    if isinstance(value, bool):
        raise ValueError(_ACCEPTED)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LEVELS:
            return text
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and value in _NUMBERED:
        return _NUMBERED[value]
    raise ValueError(_ACCEPTED)


_ACCEPTED = f"must be one of {', '.join(LEVELS)} (or 1, 2, 3; 0 for the default, {DEFAULT})"


def level_of_step(step: int) -> str:
    return _LEVEL_OF_STEP.get(step, NORMAL)


def queue_list(queue: str, level: str) -> str:
    """The Redis list that holds `queue`'s messages of `level`."""
    return queue if level == NORMAL else f"{queue}{SEPARATOR}{level}"


def queue_lists(queue: str) -> list[str]:
    """`queue`'s lists, highest level first."""
    return [queue_list(queue, level) for level in LEVELS]


def doorbell_key(queue: str) -> str:
    """The list a publish rings (one entry per message) so that a consumer blocked on it wakes;
    see inference_project/reliable_queue.py."""
    return f"{queue}{SEPARATOR}wake"
