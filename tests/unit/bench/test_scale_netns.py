"""The harness's host naming and clean-up (bench/scale/netns.py): names within Linux's 15-byte
interface names, addresses on the harness's subnet only, and what a crashed run left behind
(found from iproute2's own output, then removed by the next run)."""

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from bench.scale import netns

LINKS = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT
4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UP mode DEFAULT
7: iscale0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT
9: isc-w1@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master iscale0 state UP
11: isp-api2: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT
12: iscsi0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT
"""


def test_names_fit_linux_interface_names() -> None:
    root_end, peer = netns.link_names("sentinel123")
    assert (root_end, peer) == ("isc-sentinel123", "isp-sentinel123")
    assert max(len(root_end), len(peer)) <= netns.IFNAME_MAX
    assert netns.namespace_name("w8") == "iscale-w8"
    for bad in ("sentinel1234", "W1", "1w", "w-1", "", "w 1"):
        with pytest.raises(netns.NetnsError):
            netns.link_names(bad)


def test_addresses_stay_on_the_harness_subnet() -> None:
    assert str(netns.GATEWAY) == "10.231.0.1"
    assert [str(netns.host_address(i)) for i in (0, 1, 252)] == ["10.231.0.2", "10.231.0.3", "10.231.0.254"]
    assert all(netns.host_address(i) in ipaddress.IPv4Network("10.231.0.0/24") for i in range(253))
    with pytest.raises(netns.NetnsError):
        netns.host_address(253)  # .255 is the broadcast address


def test_leftovers_are_recognised_by_prefix_only() -> None:
    assert netns.stale_links(LINKS) == ["isc-w1", "isp-api2", "iscale0"]  # the bridge last
    listing = "iscale-redis (id: 0)\nother-ns (id: 1)\niscale-w1\n"
    assert netns.stale_namespaces(listing) == ["iscale-redis", "iscale-w1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_crashed_runs_leftovers_are_removed_by_the_next_run(tmp_path: Path) -> None:
    """A run killed outright leaves a namespace with a process in it, a veth pair and the
    namespace's /etc/netns folder: the next run's start removes all of them."""
    subprocess.run(["ip", "netns", "add", "iscale-crashed"], check=True)
    subprocess.run(
        ["ip", "link", "add", "isc-crashed", "type", "veth", "peer", "name", "isp-crashed"], check=True
    )
    (netns.NETNS_ETC / "iscale-crashed").mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", "iscale-crashed", "sleep", "300"])
    try:
        namespaces, links, folders = netns.leftovers()
        assert "iscale-crashed" in namespaces and "isc-crashed" in links and folders
        with netns.Network(log_dir=tmp_path) as net:
            assert netns.leftovers()[0] == []  # the bridge is back, the stale namespace gone
            assert net.hosts == {}
        assert sleeper.wait(timeout=10) == -9  # SIGKILLed with its namespace
        assert netns.leftovers() == ([], [], [])
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "delete", "iscale-crashed"], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", "isc-crashed"], check=False, capture_output=True)
