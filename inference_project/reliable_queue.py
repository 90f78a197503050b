"""Closing the kill window of kombu's Redis transport: a reliable-queue pop.

kombu takes a message with `BRPOP` and only afterwards records it as unacknowledged (a MULTI of
ZADD + HSET, `QoS.append`). Between the two the message is in no Redis key: a consumer killed
there, or whose link drops while the BRPOP reply is in flight, loses it for good.

Here the pop is `BLMOVE <queue> <processing list> RIGHT LEFT`: Redis moves the message, in one
step, into a list of this consumer's own. `QoS.append` then records it in kombu's unacked hash and
removes it from the processing list in the same MULTI. At every instant the message is in the
queue, in a processing list or in the unacked hash (from which kombu's visibility sweep restores
it), so a consumer may die anywhere.

Each consumer keeps a heartbeat key (`HEARTBEAT_S`) and registers its processing list with the
queue it came from in one hash. Every sweep (kombu's restore timer, once a second here) refreshes
the heartbeat and, in one Lua script per consumer, moves back to the head of its queue whatever
sits in the processing list of a consumer whose heartbeat has expired. A live consumer's own
list holds a message for microseconds; one seen there on two sweeps in a row is stale (its reply
was lost on a broken connection) and is moved back too.

BLMOVE takes one source list. A channel consuming one queue with one priority step
(`priority_steps: [0]`) pops with it. With priority levels (inference_common/priority.py: one list
per level) the move is a Lua script instead (`_POP_LEVELED`): from the highest non-empty level,
except that a level passed over `priority_max_skips` pops in a row while it had messages waiting
is served next, so none starves (and a level that is not starving never takes a turn from a
higher one). A script cannot block, so a consumer whose script found nothing blocks on the
queue's doorbell list, which every publish rings (`_put`), and runs the script again once woken
or after `brpop_timeout`; the script trims the doorbell to the messages left, so tokens never
outnumber them. A channel that consumes several queues keeps kombu's BRPOP.

The kill-window test (tests/integration/test_kill_window.py) SIGKILLs consumers at that very
instant, thousands of times, and counts every message.
"""

import contextlib
import os
import socket
import uuid
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from inference_common.priority import (
    LEVELS,
    PRIORITY_STEPS,
    doorbell_key,
    level_of_step,
    queue_list,
)

HEARTBEAT_S = 5
CONSUMERS_KEY = "reliable.consumers"

# KEYS[1] the consumers hash, ARGV[1] a consumer id, ARGV[2] its heartbeat key, ARGV[3] its
# processing list. Moves the list back to the head of its queue when the heartbeat is gone.
_RESTORE_DEAD = """
if redis.call('EXISTS', ARGV[2]) == 1 then return -1 end
local queue = redis.call('HGET', KEYS[1], ARGV[1])
local moved = 0
if queue then
  while redis.call('LMOVE', ARGV[3], queue, 'RIGHT', 'RIGHT') do moved = moved + 1 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return moved
"""

# KEYS[1] a processing list, KEYS[2] its queue, ARGV: the entries to move back if still there.
_RESTORE_STALE = """
local moved = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""


# KEYS: the queue's level lists (highest first), the consumer's processing list, the doorbell,
# a hash of how many pops in a row passed over each waiting level. ARGV[1]: after that many, a
# waiting level is served next (the lowest such first); 0: strictly by level.
_POP_LEVELED = """
local levels = #KEYS - 3
local processing, doorbell, skipped = KEYS[levels + 1], KEYS[levels + 2], KEYS[levels + 3]
local max_skips = tonumber(ARGV[1])
local lengths, left = {}, 0
for i = 1, levels do
  lengths[i] = redis.call('LLEN', KEYS[i])
  left = left + lengths[i]
end
if left == 0 then
  redis.call('DEL', doorbell)
  return false
end
local pick = nil
if max_skips > 0 then
  for i = levels, 2, -1 do
    if lengths[i] > 0 and tonumber(redis.call('HGET', skipped, i) or '0') >= max_skips then
      pick = i
      break
    end
  end
end
if not pick then
  pick = 1
  while lengths[pick] == 0 do pick = pick + 1 end
end
local item = redis.call('LMOVE', KEYS[pick], processing, 'RIGHT', 'LEFT')
lengths[pick] = lengths[pick] - 1
left = left - 1
if max_skips > 0 then
  redis.call('HDEL', skipped, pick)
  for i = pick + 1, levels do
    if lengths[i] > 0 then redis.call('HINCRBY', skipped, i, 1) else redis.call('HDEL', skipped, i) end
  end
end
if left == 0 then redis.call('DEL', doorbell) else redis.call('LTRIM', doorbell, 0, left - 1) end
return item
"""
# Tokens kept at most in a doorbell: a channel that consumes with kombu's BRPOP never takes any.
DOORBELL_MAX = 1024


class ReliableQoS(kombu_redis.QoS):
    channel: "ReliableChannel"

    def append(self, message: Any, delivery_tag: str) -> None:
        popped = self.channel.__dict__.pop("_popped", None)
        if popped is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        payload = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                self.unacked_key, delivery_tag, payload
            ).lrem(self.channel.processing_key, 1, popped).execute()
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self.channel.reliable_sweep()
        super().restore_visible(start, num, interval)


class ReliableChannel(kombu_redis.Channel):
    QoS = ReliableQoS
    # With priority levels: a level with messages waiting is passed over at most this many pops in
    # a row, then served (0: strictly by level).
    priority_max_skips = 10
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "priority_max_skips")

    connection_errors: tuple[type[Exception], ...]  # kombu's, declared for mypy (kombu-stubs lack it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumer_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.processing_key = f"reliable.processing.{self.consumer_id}"
        self.heartbeat_key = f"reliable.alive.{self.consumer_id}"
        self._source: str | None = None
        # Our command awaiting its reply: BLMOVE (one list), EVAL (the level script) or BRPOP (the
        # doorbell); None: none, or kombu's own BRPOP.
        self._in_flight: str | None = None
        self._doorbell_next = False  # the last pop found every level empty
        self._seen_in_processing: set[bytes] = set()

    @property
    def _leveled(self) -> bool:
        """The steps are inference_common.priority's levels (any other steps: kombu's lists)."""
        return list(self.priority_steps) == PRIORITY_STEPS

    def _q_for_pri(self, queue: str, pri: int) -> str:
        """With levels, inference_common.priority's names (normal keeps the queue's own)."""
        if not self._leveled:
            return str(super()._q_for_pri(queue, pri))  # type: ignore[misc]
        return queue_list(queue, level_of_step(self.priority(pri)))

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, and with levels a ring of the queue's doorbell in the same round trip."""
        if (
            not self._leveled
            or kwargs.get("_publish_batch") is not None
            or (self._expires and queue in self._expires)  # type: ignore[attr-defined]
        ):
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        doorbell = doorbell_key(queue)
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, dumps(message)).lpush(doorbell, 1).ltrim(doorbell, 0, DOORBELL_MAX - 1)
            pipe.execute()

    def _reliable_source(self) -> str | None:
        """The one queue this channel consumes, or None (then kombu's BRPOP)."""
        if self.global_keyprefix or len(self.active_queues) != 1:
            return None
        if not self._leveled and list(self.priority_steps) != [0]:
            return None
        return str(next(iter(self.active_queues)))

    def _brpop_start(self, timeout: int | None = None) -> None:
        source = self._reliable_source()
        if source is None:
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        if source != self._source:
            self._source = source
            self._heartbeat()
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        if timeout is None:
            timeout = self.brpop_timeout
        connection = self.client.connection
        if not self._leveled:
            self._in_flight = "BLMOVE"
            connection.send_command("BLMOVE", source, self.processing_key, "RIGHT", "LEFT", timeout or 0)
        elif self._doorbell_next:
            self._in_flight = "BRPOP"
            connection.send_command("BRPOP", doorbell_key(source), timeout or 0)
        else:
            self._in_flight = "EVAL"
            keys = [queue_list(source, level) for level in LEVELS]
            keys += [self.processing_key, doorbell_key(source), f"{source}{self.sep}skipped"]
            connection.send_command("EVAL", _POP_LEVELED, len(keys), *keys, self.priority_max_skips)

    def _brpop_read(self, **options: Any) -> bool:
        command, self._in_flight = self._in_flight, None
        if command is None:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        try:
            try:
                item = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if command == "BRPOP":  # woken (or timed out): the script looks again
                self._doorbell_next = False
                raise Empty()
            if not item:
                self._doorbell_next = command == "EVAL"
                raise Empty()
            self.__dict__["_popped"] = item
            try:
                self.connection._deliver(loads(bytes_to_str(item)), self._source)
            finally:
                self.__dict__.pop("_popped", None)
            return True
        finally:
            self._in_poll = None

    def _heartbeat(self) -> None:
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.set(self.heartbeat_key, 1, ex=HEARTBEAT_S)
            if self._source is not None:
                pipe.hset(CONSUMERS_KEY, self.consumer_id, self._source)
            pipe.execute()

    def reliable_sweep(self) -> None:
        """Once a sweep: heartbeat, then what dead consumers and lost replies left behind."""
        self._heartbeat()
        with self.conn_or_acquire() as client:
            if self._source is not None:
                entries = set(client.lrange(self.processing_key, 0, -1))
                stale = entries & self._seen_in_processing
                self._seen_in_processing = entries - stale
                if stale:
                    client.eval(_RESTORE_STALE, 2, self.processing_key, self._source, *stale)
            for consumer in client.hkeys(CONSUMERS_KEY):
                consumer_id = bytes_to_str(consumer)
                if consumer_id != self.consumer_id:
                    client.eval(
                        _RESTORE_DEAD,
                        1,
                        CONSUMERS_KEY,
                        consumer_id,
                        f"reliable.alive.{consumer_id}",
                        f"reliable.processing.{consumer_id}",
                    )

    def close(self) -> None:
        if self._source is not None and not self.closed:
            self._processing_return()
        super().close()

    def _processing_return(self) -> None:
        """A clean stop: the pop in flight is delivered (as kombu does), then nothing of ours
        stays in a processing list."""
        try:
            if self._in_poll:
                with contextlib.suppress(Empty):
                    self._brpop_read()
            with self.conn_or_acquire() as client:
                while client.lmove(self.processing_key, self._source, "RIGHT", "RIGHT"):
                    pass
                client.pipeline().hdel(CONSUMERS_KEY, self.consumer_id).delete(self.heartbeat_key).execute()
        except self.connection_errors:
            pass  # another consumer's sweep moves it back once our heartbeat has expired


class Transport(kombu_redis.Transport):
    Channel = ReliableChannel
