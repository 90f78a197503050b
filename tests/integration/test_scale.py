"""The multi-host harness (bench/scale), quick mode: hosts as network namespaces, the platform
across them with deploy/'s start scripts (Redis with a replica and three Sentinels), throughput
with 1 and 2 worker hosts, and one fault of each kind on the same cluster, counted from the
platform's records: 1 (a worker host cut off mid-batch), 5 (an API host lost behind HAProxy), 4
(PostgreSQL restarted) and 3 (the Redis primary SIGKILLed, the Sentinels failing over). Needs
root and Debian's haproxy, redis-server, postgresql and wrk; a missing one fails the test, naming
it."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bench.scale import netns
from bench.scale.run import scale_run
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
QUICK_BUDGET_S = 240


def prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("the multi-host harness builds network namespaces: run the tests as root")
    missing = [tool for tool in ("ip", "haproxy", "redis-server", "wrk") if shutil.which(tool) is None]
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("postgresql")
    if missing:
        pytest.fail(f"the multi-host harness needs {', '.join(missing)} (make test installs them)")


def reach(net: netns.Network, source: netns.Host, address: str, port: int) -> bool:
    """A TCP connection from inside `source` to address:port (what a ping would show, over the
    same bridge; ICMP ping is not installed everywhere)."""
    probe = (
        "import socket, sys; s = socket.socket(); s.settimeout(1); "
        "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", source.namespace, sys.executable, "-c", probe, address, str(port)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_two_hosts_reach_each_other_a_cut_host_is_gone_and_nothing_is_left(tmp_path: Path) -> None:
    prerequisites()
    with netns.Network(log_dir=tmp_path) as net:
        a, b = net.host_add("a"), net.host_add("b")
        assert (a.address, b.address) == ("10.231.0.2", "10.231.0.3")
        server = net.start(
            b,
            "http",
            [sys.executable, "-m", "http.server", "--bind", b.address, "9000"],
            env={"PATH": os.environ["PATH"]},
            cwd=tmp_path,
        )
        deadline = time.monotonic() + 20
        while not reach(net, a, b.address, 9000):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert not reach(net, a, "127.0.0.1", 9000)  # loopback is each host's own
        net.cut(b)
        assert server.popen.poll() == -signal.SIGKILL
        assert b.pids() == []
        assert not reach(net, a, b.address, 9000)
    assert netns.leftovers() == ([], [], [])


def test_sigterm_removes_every_host_and_process(tmp_path: Path) -> None:
    """A run stopped with SIGTERM (what CI sends on a timeout) removes what it built."""
    prerequisites()
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from bench.scale.netns import Network
        with Network(log_dir=Path({str(tmp_path)!r})) as net:
            host = net.host_add("victim")
            net.start(host, "sleep", ["sleep", "317"], env={{}}, cwd=Path("/"))
            print("ready", flush=True)
            time.sleep(300)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    assert netns.leftovers()[0] == ["iscale-victim"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert netns.leftovers() == ([], [], [])
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == "sleep317"]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b"").decode(errors="replace")
    except OSError:
        return ""


def test_quick_mode_scales_and_survives_each_kind_of_fault() -> None:
    prerequisites()
    started = time.monotonic()
    results: dict[str, Any] = scale_run(quick=True)
    assert time.monotonic() - started < QUICK_BUDGET_S
    assert netns.leftovers() == ([], [], [])
    assert results["database"] == "postgresql"

    points = results["points"]
    assert [p["worker_hosts"] for p in points] == [1, 2]
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in points)
    assert points[1]["rps"] > points[0]["rps"]  # a second worker host adds throughput
    assert all(p["cpu_cores"]["API hosts"] > 0 and p["cpu_cores"]["worker children"] > 0 for p in points)
    assert all(p["rows_per_batch"] >= 1 for p in points)

    one = results["fault_worker_host"]
    assert one["cut_inside_the_kernel"], "the cut host's child was not inside a batch"
    assert one["stranded_requests"] >= 1, "the cut host held no request: not cut mid-batch"
    assert one["stranded_answered"] == one["stranded_requests"]
    assert set(one["stranded_served_by"]) == {"w1"}  # the other host, never the lost one
    assert one["redelivered_after_s"] <= 10
    assert one["lost"] == 0 and one["records_missing"] == 0
    assert one["computed_twice"] == 0 and one["computed_for_nobody"] == 0 and one["ids_given_twice"] == 0
    assert one["wrong_answers"] == 0 and one["answered"] == one["requests"] > 0

    five = results["fault_api_host"]
    assert five["lost"] == 0 and five["answered"] == five["requests"] > 0
    assert five["ids_given_twice"] == 0 and five["wrong_answers"] == 0
    assert five["computed_twice"] == 0 and five["computed_for_nobody"] == 0
    assert five["clients_saw"]["requests_retried"] >= 1, "no request was in flight on the lost API host"
    assert five["clients_saw"]["errors_for_s"] < 10

    four = results["fault_postgres"]
    assert four["failed_attempts"] == 0, four["clients_saw"]  # predictions answered all along
    assert four["lost"] == 0 and four["answered"] == four["requests"] > 0 and four["wrong_answers"] == 0
    assert four["served_during_outage"] > 0, four
    assert four["writes_refused"] >= 1 and set(four["writes_refused_statuses"]) == {"503"}, four
    assert four["writes_refused_without_retry_after"] == 0 and four["writes_refused_codes"] == ["unavailable"]
    assert four["write_status"] == 201, four

    three = results["fault_redis_primary"]
    assert three["promoted"] == "redis2" and three["restarted_as"] == "slave", three
    sync, jobs = three["clients_saw"], three["async_clients_saw"]
    assert set(sync["attempts"]) <= {"200", "503"}, three["requests_with_other_outcomes"]
    assert set(jobs["attempts"]) <= {"202", "503"}, three["requests_with_other_outcomes"]
    assert sync["503_without_retry_after"] == 0 and jobs["503_without_retry_after"] == 0
    for saw in (sync, jobs):
        assert saw["served_again_s"] is not None and saw["served_again_s"] <= 10, three
    assert three["async_accepted"] > 0 and three["async_done"] == three["async_accepted"], three[
        "async_statuses"
    ]
    assert three["lost"] == 0 and three["answered"] == three["requests"] > 0
    assert three["wrong_answers"] == 0 and three["ids_given_twice"] == 0
