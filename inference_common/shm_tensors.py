"""Tensors handed from the API to a worker on the same host through shared memory.

Through Redis an offloaded 602 KB image is copied into a socket by the API, stored and copied out
again by Redis, and read from a socket by the worker: about 500 core-µs of the serving path's
~1,800 (docs/architecture.md, "Tensors in shared memory"). With INFERENCE_TENSOR_SHM_BYTES set,
each API process keeps one file of that size in /dev/shm, mapped once: it copies a sync
request's tensor into a free slot and sends the slot's place (`"shm"` in the wire tensor) instead
of a Redis key; the worker, mapping the same file, copies it out. The API frees the slot when the
request ends (answered, timed out, cancelled) or, failing that, once the request's deadline has
passed; the worker deletes nothing.

Each slot starts with a generation number, written before the data: the worker reads the data,
then the generation, and a generation that changed means the slot was freed and reused under it
(a request given up long ago): the part is answered `expired`, never with another request's
pixels. A worker on another host finds no such file and answers `tensors_unavailable`: turn it on
only where every worker of the API's models runs on the API's host (`make run` does).
"""

import atexit
import bisect
import contextlib
import mmap
import os
import secrets
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import psutil

HEADER = struct.Struct("<Q")  # the slot's generation
ALIGN = 64
PREFIX = "inference-tensors-"
# Where the regions live: tmpfs, so the pages are memory. Each file is created anew (O_EXCL) under
# a random name, readable by its owner alone.
SHM = Path("/dev/shm")  # noqa: S108
FOLDER = SHM if SHM.is_dir() else Path(tempfile.gettempdir())


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


class ShmRegion:
    """One API process's region: a first-fit allocator over one mapped file. Thread-safe (the
    batches are published from a thread pool, requests end on the event loop)."""

    def __init__(self, size: int, folder: Path = FOLDER) -> None:
        _stale_remove(folder)
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.path = folder / self.name
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Reserved now: a tmpfs that fills up later (a container's 64 MB /dev/shm) would
            # otherwise kill this process with SIGBUS at its first write past the room left.
            os.posix_fallocate(descriptor, 0, size)
            self._map = mmap.mmap(descriptor, size)
        except OSError:
            self.close()
            raise
        finally:
            os.close(descriptor)
        self.size = size
        self._lock = threading.Lock()
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, length), by offset
        self._slots: dict[str, list[tuple[int, int, float]]] = {}  # request id -> (offset, length, expires)
        self._generation = 0
        atexit.register(self.close)

    def put(self, request_id: str, data: Any, *, ttl_s: float) -> dict[str, Any] | None:
        """Copy `data` (a bytes-like) into a free slot held by `request_id` for at most `ttl_s`;
        its place for the wire tensor, or None when the region has no room."""
        view = memoryview(data).cast("B")
        length = _aligned(HEADER.size + view.nbytes)
        with self._lock:
            offset = self._take(length)
            if offset is None:
                self._reclaim(time.monotonic())
                offset = self._take(length)
                if offset is None:
                    return None
            self._generation += 1
            generation = self._generation
            self._slots.setdefault(request_id, []).append((offset, length, time.monotonic() + ttl_s))
        HEADER.pack_into(self._map, offset, generation)  # before the data: see the module's notes
        start = offset + HEADER.size
        self._map[start : start + view.nbytes] = view
        return {"region": self.name, "offset": offset, "size": view.nbytes, "generation": generation}

    def release(self, request_id: str) -> None:
        """Free the slots of a request that ended."""
        with self._lock:
            for offset, length, _ in self._slots.pop(request_id, []):
                self._give(offset, length)

    def used(self) -> int:
        with self._lock:
            return self.size - sum(length for _, length in self._free)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _take(self, length: int) -> int | None:
        for index, (offset, free) in enumerate(self._free):
            if free >= length:
                if free == length:
                    del self._free[index]
                else:
                    self._free[index] = (offset + length, free - length)
                return offset
        return None

    def _give(self, offset: int, length: int) -> None:
        index = bisect.bisect(self._free, (offset, length))
        if index < len(self._free) and offset + length == self._free[index][0]:  # joins the next
            length += self._free.pop(index)[1]
        if index and self._free[index - 1][0] + self._free[index - 1][1] == offset:  # and the previous
            offset, previous = self._free[index - 1]
            self._free[index - 1] = (offset, previous + length)
        else:
            self._free.insert(index, (offset, length))

    def _reclaim(self, now: float) -> None:
        """Free the slots past their deadline (their request ended without a release)."""
        for request_id in [r for r, slots in self._slots.items() if all(e < now for _, _, e in slots)]:
            for offset, length, _ in self._slots.pop(request_id):
                self._give(offset, length)


def _stale_remove(folder: Path) -> None:
    """Remove the regions of API processes that are gone (killed before their atexit ran)."""
    for path in folder.glob(f"{PREFIX}*"):
        pid = path.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class ShmReader:
    """A worker's maps of the regions it was sent, the most recently used kept open."""

    def __init__(self, folder: Path = FOLDER, keep: int = 8) -> None:
        self.folder = folder
        self.keep = keep
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()

    def read(self, place: dict[str, Any]) -> bytes | None:
        """The slot's bytes; None when the slot was freed and reused meanwhile. Raises
        FileNotFoundError when there is no such region here (another host's, or its API gone)."""
        region = self._map(place["region"])
        offset, size = place["offset"], place["size"]
        start = offset + HEADER.size
        if offset < 0 or size < 0 or start + size > len(region):
            return None
        data = region[start : start + size]
        (generation,) = HEADER.unpack_from(region, offset)
        return data if generation == place["generation"] else None

    def _map(self, name: str) -> mmap.mmap:
        if name in self._maps:
            self._maps.move_to_end(name)
            return self._maps[name]
        if "/" in name or not name.startswith(PREFIX):
            raise FileNotFoundError(name)
        with (self.folder / name).open("rb") as file:
            region = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps[name] = region
        while len(self._maps) > self.keep:
            self._maps.popitem(last=False)[1].close()
        return region
