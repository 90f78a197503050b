"""Tensors in shared memory: an API process's region and a worker's reads of it."""

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_common.shm_tensors import PREFIX, ShmReader, ShmRegion
from inference_common.tensor_store import EXPIRED, UNREACHABLE, tensors_fetch, tensors_to_shm
from inference_common.wire import tensor_decode, tensor_encode


def test_a_slot_reads_back_and_a_reused_one_reads_as_gone(tmp_path: Path) -> None:
    region = ShmRegion(4096, folder=tmp_path)
    reader = ShmReader(folder=tmp_path)
    assert stat.S_IMODE(region.path.stat().st_mode) == 0o600  # the owner's alone
    first = region.put("r1", b"abc", ttl_s=30)
    assert first is not None and reader.read(first) == b"abc"
    region.release("r1")
    second = region.put("r2", b"xyz", ttl_s=30)
    assert second is not None and second["offset"] == first["offset"]  # the slot, reused
    assert reader.read(first) is None and reader.read(second) == b"xyz"
    with pytest.raises(FileNotFoundError):
        reader.read({**second, "region": f"{PREFIX}1-gone"})
    with pytest.raises(FileNotFoundError):
        reader.read({**second, "region": "../etc/passwd"})


def test_a_full_region_refuses_then_takes_back_expired_and_freed_slots(tmp_path: Path) -> None:
    region = ShmRegion(3 * 1024, folder=tmp_path)
    places = [region.put(f"r{i}", bytes(1000), ttl_s=30) for i in range(3)]
    assert all(places) and region.put("r3", bytes(1000), ttl_s=30) is None
    region.release("r0")
    region.release("r1")  # two neighbours: one free run of 2 KB
    assert region.put("big", bytes(2000), ttl_s=30) is not None
    region.release("big")
    short = ShmRegion(1024, folder=tmp_path)
    assert short.put("late", bytes(900), ttl_s=-1) is not None  # its deadline passed already
    assert short.put("next", bytes(900), ttl_s=30) is not None  # the expired slot was reclaimed
    region.release("r2")
    assert region.used() == 0


def test_batches_go_to_shared_memory_and_back(tmp_path: Path) -> None:
    region = ShmRegion(2**20, folder=tmp_path)
    images = [np.random.default_rng(i).random((1, 16, 16, 3), dtype=np.float32) for i in range(3)]
    parts: list[dict[str, Any]] = [
        {"id": f"r{i}", "inputs": {"images": tensor_encode(a, view=True)}} for i, a in enumerate(images)
    ]
    assert tensors_to_shm(region, parts, ttl_s=30)
    assert all(p["inputs"]["images"]["data"] == b"" and "shm" in p["inputs"]["images"] for p in parts)
    region.release("r1")
    region.put("other", bytes(images[1].nbytes), ttl_s=30)  # r1's slot now holds another request
    missing = tensors_fetch(lambda store: None, parts, ShmReader(folder=tmp_path))
    assert missing == {"r1": EXPIRED}
    for i in (0, 2):
        np.testing.assert_array_equal(tensor_decode(parts[i]["inputs"]["images"]), images[i])
    elsewhere = [{"id": "r9", "inputs": {"images": {**parts[0]["inputs"]["images"]}}}]
    assert tensors_fetch(lambda store: None, elsewhere, ShmReader(folder=tmp_path / "other-host")) == {
        "r9": UNREACHABLE
    }
    assert tensors_fetch(lambda store: None, elsewhere, None) == {"r9": UNREACHABLE}


def test_a_region_without_room_moves_nothing(tmp_path: Path) -> None:
    region = ShmRegion(2048, folder=tmp_path)
    parts: list[dict[str, Any]] = [
        {"id": f"r{i}", "inputs": {"x": tensor_encode(np.ones(256, np.float32))}} for i in range(3)
    ]
    assert not tensors_to_shm(region, parts, ttl_s=30)  # 3 KB do not fit: all stay inline
    assert all("shm" not in p["inputs"]["x"] and len(p["inputs"]["x"]["data"]) == 1024 for p in parts)
    assert region.used() == 0


def test_regions_of_dead_processes_are_removed(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead = tmp_path / f"{PREFIX}{child.stdout.strip()}-abcd"
    dead.write_bytes(b"x")
    alive = tmp_path / f"{PREFIX}{os.getpid()}-abcd"
    alive.write_bytes(b"x")
    region = ShmRegion(1024, folder=tmp_path)
    assert not dead.exists() and alive.exists() and region.path.exists()
    region.close()
    assert not region.path.exists()


def test_a_region_larger_than_the_room_left_is_refused_at_once(tmp_path: Path) -> None:
    # Reserved up front (posix_fallocate): no SIGBUS later at a write past a full tmpfs.
    with pytest.raises(OSError):
        ShmRegion(2**50, folder=tmp_path)
    assert not list(tmp_path.glob(f"{PREFIX}*"))
