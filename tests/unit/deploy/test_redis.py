"""deploy/redis/: the Sentinel layout's start scripts, run for real (redis-server, three Sentinels)."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, cast

import pytest
import redis
from redis.sentinel import Sentinel

from tests.conftest import ROOT, free_port

SCRIPTS = ROOT / "deploy" / "redis"
MASTER = "inference"
HOST = "127.0.0.1"
T = TypeVar("T")


@dataclass
class Nodes:
    """Two data nodes (a, b) and three Sentinels (s0..s2) on loopback ports, started by a script
    of deploy/ each (the subclasses' `start`)."""

    root: Path
    nodes: dict[str, int] = field(default_factory=lambda: {"a": free_port(), "b": free_port()})
    sentinels: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.processes):
            self.kill(name)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def node(self, name: str) -> redis.Redis:
        return redis.Redis(
            port=self.nodes[name], password="node-secret", decode_responses=True, socket_timeout=2
        )

    def master(self) -> tuple[str, int]:
        """The master as a client finds it: redis-py's Sentinel, as the settings configure it."""
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(HOST, port) for port in self.sentinels],
            sentinel_kwargs={"password": "sentinel-secret", "socket_timeout": 1},
            socket_timeout=1,
        )
        address: tuple[str, int] = sentinel.discover_master(MASTER)  # type: ignore[no-untyped-call]
        return address

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.root.glob("*.log")))


@dataclass
class Layout(Nodes):
    """A primary and a replica (redis.sh) and three Sentinels (sentinel.sh) on loopback ports."""

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "REDIS_SENTINELS": ",".join(f"{HOST}:{port}" for port in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
            "REDIS_PASSWORD": "node-secret",
            "REDIS_PRIMARY": f"{HOST}:{self.nodes['a']}",
            "REDIS_NODES": ",".join(f"{HOST}:{port}" for port in self.nodes.values()),
            **extra,
        }

    def start(self, name: str) -> None:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        if name in self.nodes:
            script = "redis.sh"
            env = self.env(REDIS_ANNOUNCE=HOST, REDIS_PORT=str(self.nodes[name]), REDIS_DIR=str(folder))
        else:
            script = "sentinel.sh"
            port = self.sentinels[int(name.removeprefix("s"))]
            env = self.env(SENTINEL_ANNOUNCE=HOST, SENTINEL_PORT=str(port), REDIS_DIR=str(folder))
        with (self.root / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                ["sh", str(SCRIPTS / script)], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT
            )


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    with Layout(tmp_path) as running:
        yield running


def until(probe: Callable[[], T], what: str, layout: Nodes, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (redis.RedisError, OSError) as error:
            last = error
        time.sleep(0.1)
    raise AssertionError(f"{what}: last {last!r}\n{layout.log()}")


def replica_of(layout: Nodes, name: str, master: str) -> bool:
    info = layout.node(name).info("replication")
    return bool(
        info["role"] == "slave"
        and info["master_port"] == layout.nodes[master]
        and info["master_link_status"] == "up"
    )


def test_sentinel_layout_starts_fails_over_and_restarts_onto_the_current_master(layout: Layout) -> None:
    # First start: no Sentinel answers yet, so every script falls back to REDIS_PRIMARY (a).
    layout.start("a")
    until(lambda: layout.node("a").ping(), "a answers", layout)
    layout.start("b")
    until(lambda: replica_of(layout, "b", "a"), "b replicates a", layout)
    for index in range(3):
        layout.start(f"s{index}")
    until(lambda: layout.master() == (HOST, layout.nodes["a"]), "the Sentinels name a", layout)
    sentinel = redis.Redis(port=layout.sentinels[0], password="sentinel-secret", decode_responses=True)
    until(
        lambda: int(_master_info(sentinel)["num-other-sentinels"]) == 2,
        "the Sentinels found each other",
        layout,
    )
    layout.node("a").set("before-failover", "kept")

    # The primary killed: the Sentinels promote b within the down-after and failover timeouts.
    killed = time.monotonic()
    layout.kill("a")
    until(lambda: layout.master() == (HOST, layout.nodes["b"]), "b promoted", layout)
    promoted_after = time.monotonic() - killed
    assert promoted_after < 10, promoted_after
    assert layout.node("b").get("before-failover") == "kept"
    # A supervisor restarts a once the failover has settled: a Sentinel still on the old epoch
    # would turn a restarted a back into a primary (seen once in make test).
    until(lambda: _all_name(layout, "b"), "every Sentinel names b", layout)

    # a comes back: it asks the Sentinels first, so it starts as b's replica, never as a primary.
    layout.start("a")
    until(lambda: replica_of(layout, "a", "b"), "a restarted as b's replica", layout)
    assert "starts as a replica of" in (layout.root / "a.log").read_text()
    assert layout.node("a").get("before-failover") == "kept"

    # Every Sentinel restarted at once: no peer answers, so they take the master from the data
    # nodes' ROLE (b), not REDIS_PRIMARY (a, now a replica).
    for index in range(3):
        layout.kill(f"s{index}")
    for index in range(3):
        layout.start(f"s{index}")
    until(lambda: layout.master() == (HOST, layout.nodes["b"]), "the restarted Sentinels name b", layout)
    starts = [line for line in (layout.root / "s0.log").read_text().splitlines() if " monitors " in line]
    assert starts[-1].endswith(f"at {HOST}:{layout.nodes['b']}"), starts
    assert replica_of(layout, "a", "b")


def _all_name(layout: Nodes, node: str) -> bool:
    """Every Sentinel names `node` the master (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
    expected = (HOST, layout.nodes[node])
    for port in layout.sentinels:
        sentinel = redis.Redis(port=port, password="sentinel-secret", decode_responses=True, socket_timeout=1)
        address = cast("tuple[str, int] | None", sentinel.sentinel_get_master_addr_by_name(MASTER))
        if tuple(address or ()) != expected:
            return False
    return True


def _master_info(sentinel: redis.Redis) -> dict[str, Any]:
    """SENTINEL MASTER's fields (redis-py types the reply `dict | bool`)."""
    info = sentinel.sentinel_master(MASTER)
    assert isinstance(info, dict)
    return info


BIN = ROOT / "deploy" / "bin"


@dataclass
class BinLayout(Nodes):
    """The same layout from deploy/bin/redis and deploy/bin/sentinel (`make run` and the multi-host
    harness): each data node and Sentinel with a var folder of its own, passwords on both."""

    def env(self, name: str) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "INFERENCE_VAR_DIR": str(self.root / name),
            "REDIS_SENTINELS": ",".join(f"{HOST}:{port}" for port in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
            "REDIS_PASSWORD": "node-secret",
        }
        if name not in self.nodes:
            port = self.sentinels[int(name.removeprefix("s"))]
            return env | {"SENTINEL_PORT": str(port), "SENTINEL_PRIMARY": f"{HOST} {self.nodes['a']}"}
        env["REDIS_PORT"] = str(self.nodes[name])
        if name == "b":  # the first start's replica; a is the first start's primary
            env["REDIS_REPLICAOF"] = f"{HOST} {self.nodes['a']}"
        return env

    def start(self, name: str) -> None:
        script = BIN / ("redis" if name in self.nodes else "sentinel")
        with (self.root / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(script)], env=self.env(name), stdout=log, stderr=subprocess.STDOUT
            )


@pytest.fixture
def bin_layout(tmp_path: Path) -> Iterator[BinLayout]:
    with BinLayout(tmp_path) as running:
        yield running


def test_bin_scripts_fail_over_with_passwords_and_the_old_primary_restarts_as_a_replica(
    bin_layout: BinLayout,
) -> None:
    layout = bin_layout
    layout.start("a")
    until(lambda: layout.node("a").ping(), "a answers", layout)
    layout.start("b")
    until(lambda: replica_of(layout, "b", "a"), "b replicates a", layout)
    assert "the Sentinels name" not in (layout.root / "a.log").read_text()  # none answered: a first start
    for index in range(3):
        layout.start(f"s{index}")
    sentinel = redis.Redis(port=layout.sentinels[0], password="sentinel-secret", decode_responses=True)
    until(
        lambda: (
            int(_master_info(sentinel)["num-other-sentinels"]) == 2
            and layout.master()[1] == layout.nodes["a"]
        ),
        "the Sentinels found each other and name a",
        layout,
    )
    conf = (layout.root / "s0" / f"sentinel-{layout.sentinels[0]}" / "sentinel.conf").read_text()
    assert "sentinel sentinel-pass sentinel-secret" in conf
    layout.node("a").set("before-failover", "kept")

    # Promotion needs two Sentinels to agree that a is down: they ask each other with sentinel-pass.
    layout.kill("a")
    until(lambda: layout.master() == (HOST, layout.nodes["b"]), "b promoted", layout)

    # a restarted as a supervisor would, with its first start's environment: the Sentinels name b.
    layout.start("a")
    until(lambda: replica_of(layout, "a", "b"), "a restarted as b's replica", layout)
    assert f"starts as a replica of {HOST} {layout.nodes['b']}" in (layout.root / "a.log").read_text()
    assert layout.node("a").get("before-failover") == "kept"
    assert layout.node("b").info("replication")["role"] == "master"
