"""Hosts as Linux network namespaces, on one bridge the harness makes (iproute2's `ip`, as root).

    root namespace    bridge iscale0 10.231.0.1/24, the load generator, the harness
    iscale-<host>     eth0 10.231.0.N/24 (the namespace end of the veth pair isc-<host>), lo,
                      default route via 10.231.0.1

Every host sees the same file system (shared folders stand in for shared storage) and only its own
network: what the platform's processes reach of each other goes through the bridge, so taking a
host's link down cuts it off as a pulled cable would. Nothing else on the machine is touched: only
these addresses and loopback, and names under this module's prefixes.

Everything made is removed again: on a normal exit, on an exception, on SIGINT/SIGTERM (turned
into exceptions, so the `with` block's exit runs) and at interpreter exit (atexit). A run that
was killed outright (SIGKILL) leaves its namespaces, links and processes behind: the next run
removes whatever carries the prefixes before it builds anything. A lock file keeps two runs from
removing each other's hosts.
"""

import atexit
import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

BRIDGE = "iscale0"
NAMESPACE_PREFIX = "iscale-"
LINK_PREFIX = "isc-"  # the root end of each host's veth pair; the other end is eth0 in the host
PEER_PREFIX = "isp-"  # the namespace end's name until it is moved in and renamed
SUBNET = ipaddress.IPv4Network("10.231.0.0/24")
GATEWAY = SUBNET.network_address + 1
LOCK_PATH = Path("/run/lock/iscale.lock")
# `ip netns exec` bind-mounts /etc/netns/<namespace>/<file> over /etc/<file>. A host reaches no
# name server (its default route ends at the bridge, which forwards nothing), so a lookup of an
# address's name (Python's http.server, socket.getfqdn) would hang on resolver timeouts: each host
# gets a resolv.conf naming its own loopback (refused at once) and a hosts file with its name.
NETNS_ETC = Path("/etc/netns")
# Linux interface names: at most 15 bytes (IFNAMSIZ less the NUL).
IFNAME_MAX = 15
HOST_NAME = re.compile(rf"^[a-z][a-z0-9]{{0,{IFNAME_MAX - len(LINK_PREFIX) - 1}}}$")


class NetnsError(RuntimeError):
    pass


def host_name_check(name: str) -> str:
    """A host's name is part of its interface names: lowercase letters and digits, ≤ 11 long."""
    if not HOST_NAME.match(name):
        raise NetnsError(
            f"host name {name!r}: lowercase letters and digits, starting with a letter, at most 11"
        )
    return name


def namespace_name(host: str) -> str:
    return NAMESPACE_PREFIX + host_name_check(host)


def link_names(host: str) -> tuple[str, str]:
    """The veth pair of a host: (root end, namespace end before it is renamed eth0)."""
    host_name_check(host)
    return LINK_PREFIX + host, PEER_PREFIX + host


def host_address(index: int) -> ipaddress.IPv4Address:
    """The index-th host's address: .2 upwards (.1 is the bridge)."""
    address = GATEWAY + 1 + index
    if address not in SUBNET or address == SUBNET.broadcast_address:
        raise NetnsError(f"no address left for host {index} in {SUBNET}")
    return address


def stale_namespaces(netns_list: str) -> list[str]:
    """Our namespaces in `ip netns list` output ("iscale-w1 (id: 3)" a line)."""
    names = (line.split()[0] for line in netns_list.splitlines() if line.strip())
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


def stale_links(link_list: str) -> list[str]:
    """Our links in `ip -o link show` output ("7: isc-w1@if6: <...> ..." a line), the bridge last
    (deleting a veth end first takes its pair with it)."""
    names = []
    for line in link_list.splitlines():
        match = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if match:
            names.append(match.group(1))
    ours = [n for n in names if n.startswith((LINK_PREFIX, PEER_PREFIX))]
    return ours + ([BRIDGE] if BRIDGE in names else [])


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespace_pids(namespace: str) -> list[int]:
    """Every process in the namespace (`ip netns pids`), in the machine's pid namespace."""
    out = ip("netns", "pids", namespace, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def namespace_kill(namespace: str, *, timeout_s: float = 5.0) -> None:
    """SIGKILL every process in the namespace until none is left (a dying parent's child may
    still be forking)."""
    deadline = time.monotonic() + timeout_s
    while pids := namespace_pids(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes left in {namespace} after SIGKILL: {pids}")
        time.sleep(0.05)


def leftovers() -> tuple[list[str], list[str], list[Path]]:
    """Our namespaces, links and /etc/netns folders that exist now."""
    folders = sorted(NETNS_ETC.glob(f"{NAMESPACE_PREFIX}*")) if NETNS_ETC.is_dir() else []
    return stale_namespaces(ip("netns", "list")), stale_links(ip("-o", "link", "show")), folders


def leftovers_remove() -> None:
    namespaces, links, folders = leftovers()
    for namespace in namespaces:
        namespace_kill(namespace)
        ip("netns", "delete", namespace, check=False)
    for link in stale_links(ip("-o", "link", "show")):  # again: a namespace's deletion took its pairs
        if link in links:
            ip("link", "delete", link, check=False)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only when empty: someone else's namespaces may have files there


def host_etc_write(namespace: str, *, address: str) -> Path:
    folder = NETNS_ETC / namespace
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    (folder / "hosts").write_text(f"127.0.0.1 localhost\n{address} {socket.gethostname()}\n")
    return folder


@dataclass
class HostProcess:
    host: "Host"
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Host:
    name: str
    address: str
    namespace: str
    link: str
    processes: list[HostProcess] = field(default_factory=list)
    cut_at: float | None = None

    def pids(self) -> list[int]:
        return namespace_pids(self.namespace)


class Network:
    """`with Network(log_dir=...) as net:` the bridge; `net.host_add(name)` a host;
    `net.start(host, name, argv, env=...)` a process in it; `net.cut(host)` a lost host."""

    def __init__(self, *, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.hosts: dict[str, Host] = {}
        self._lock: IO[str] | None = None
        self._signals: dict[int, Any] = {}
        self._open = False

    # --- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Network":
        if os.geteuid() != 0:
            raise NetnsError("the multi-host harness builds network namespaces: run it as root")
        self._lock_take()
        try:
            self._signals_install()
            atexit.register(self.close)
            self._open = True
            leftovers_remove()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            ip("link", "add", BRIDGE, "type", "bridge")
            ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
            ip("link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process (SIGTERM to each group, then SIGKILL to whatever is left in each
        namespace), delete the namespaces and links, free the lock. Safe to call twice."""
        if not self._open:
            self._lock_release()
            return
        self._open = False
        try:
            for host in reversed(list(self.hosts.values())):
                for process in host.processes:
                    _group_signal(process.popen, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for host in self.hosts.values():
                for process in host.processes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            for host in self.hosts.values():
                for process in host.processes:
                    _group_signal(process.popen, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.popen.wait(timeout=5)
            leftovers_remove()
        finally:
            self.hosts.clear()
            self._signals_restore()
            atexit.unregister(self.close)
            self._lock_release()

    def _lock_take(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        lock = LOCK_PATH.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise NetnsError(
                f"another harness run holds {LOCK_PATH} (pid {holder}); wait for it to end"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _lock_release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _signals_install(self) -> None:
        """SIGTERM and SIGINT become exceptions in the main thread, so cleanup runs in `finally`
        blocks and __exit__; another thread cannot install handlers and relies on those."""
        with contextlib.suppress(ValueError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._signals[signum] = signal.signal(signum, _raise_for_signal)

    def _signals_restore(self) -> None:
        for signum, handler in self._signals.items():
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)
        self._signals.clear()

    # --- hosts ----------------------------------------------------------------------------------

    def host_add(self, name: str) -> Host:
        if name in self.hosts:
            raise NetnsError(f"host {name!r} exists")
        namespace = namespace_name(name)
        link, peer = link_names(name)
        address = str(host_address(len(self.hosts)))
        host = Host(name=name, address=address, namespace=namespace, link=link)
        self.hosts[name] = host  # registered first: close() removes a half-built host too
        host_etc_write(namespace, address=address)
        ip("netns", "add", namespace)
        ip("link", "add", link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", namespace)
        ip("link", "set", link, "master", BRIDGE, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "link", "set", peer, "name", "eth0")
        ip("-n", namespace, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "route", "add", "default", "via", str(GATEWAY))
        return host

    def start(
        self, host: Host, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path
    ) -> HostProcess:
        """`ip netns exec <namespace> argv` in a process group of its own, its output in
        <log_dir>/<host>.<name>.log."""
        log_path = self.log_dir / f"{host.name}.{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = HostProcess(host=host, name=name, popen=popen, log_path=log_path)
        host.processes.append(process)
        return process

    def run(
        self, host: Host, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout_s: float
    ) -> HostProcess:
        """A one-shot (migrations, registration) in the host, to completion; fails with its log."""
        process = self.start(host, name, argv, env=env, cwd=cwd)
        try:
            code = process.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _group_signal(process.popen, signal.SIGKILL)
            raise NetnsError(f"{host.name}/{name} ran past {timeout_s} s:\n{process.log()[-3000:]}") from None
        if code != 0:
            raise NetnsError(f"{host.name}/{name} exited with {code}:\n{process.log()[-3000:]}")
        return process

    def stop(self, process: HostProcess, *, timeout_s: float = 15) -> int:
        """SIGTERM to the process's group, SIGKILL after the timeout; its exit status."""
        _group_signal(process.popen, signal.SIGTERM)
        try:
            return process.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _group_signal(process.popen, signal.SIGKILL)
            return process.popen.wait(timeout=5)

    def cut(self, host: Host) -> float:
        """The host lost: its link taken down (nothing it sends arrives any more, nothing it was
        sent is answered), then every process in it SIGKILLed. Returns when the link went down
        (time.time())."""
        ip("link", "set", host.link, "down")
        host.cut_at = time.time()
        namespace_kill(host.namespace)
        for process in host.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=5)
        return host.cut_at


def _group_signal(popen: subprocess.Popen[bytes], signum: int) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signum)


def _raise_for_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def network(*, log_dir: Path) -> Iterator[Network]:
    with Network(log_dir=log_dir) as net:
        yield net
