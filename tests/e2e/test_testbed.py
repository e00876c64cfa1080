"""The testbed itself: real systemd hosts, no duplicates, stale state cleaned, nothing left."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from llmhost.testing.testbed import Testbed, network, processes
from llmhost.testing.testbed.testbed import mounts_under

pytestmark = pytest.mark.e2e


def nspawn_pids(testbed: Testbed) -> list[int]:
    """Every systemd-nspawn on this machine that runs a tree of this testbed."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline.startswith("systemd-nspawn") and str(testbed.hosts_dir) in cmdline:
                found.append(int(entry.name))
    return sorted(found)


def test_hosts_are_systemd_machines_in_their_own_networks(testbed, hosts):
    for host in hosts:
        out = testbed.ssh(host, "cat /proc/1/comm; hostname; ip -4 -o addr show scope global")
        pid1, hostname, addresses = out.splitlines()[0], out.splitlines()[1], out.splitlines()[2:]
        assert pid1 == "systemd"
        assert hostname == host.name
        assert len(addresses) == 1 and f"{host.address}/30" in addresses[0]
        assert testbed.ssh(host, "systemctl is-system-running").strip() == "running"


def test_up_again_reuses_the_hosts_without_duplicates(testbed, hosts):
    before = [(h.name, h.nspawn_pid, h.proxy_pid, h.ntp_pid) for h in hosts]
    again = testbed.up(len(hosts))
    assert [(h.name, h.nspawn_pid, h.proxy_pid, h.ntp_pid) for h in again] == before
    assert len(nspawn_pids(testbed)) == len(hosts)
    assert network.our_namespaces() == [f"llmhost-tb{h.index}" for h in hosts]
    assert network.our_links() == sorted(f"lhtb{h.index}h" for h in hosts)


def test_fewer_hosts_removes_the_extra_ones_from_the_recorded_state(testbed, hosts):
    """What inventories/testbed.py reads must never list a host that `up` just removed."""
    fewer = testbed.up(1)
    assert [h.name for h in fewer] == [h.name for h in testbed.hosts()] == ["tb1"]
    assert network.our_namespaces() == ["llmhost-tb1"]
    restored = testbed.up(len(hosts))
    assert [h.name for h in restored] == [h.name for h in hosts]


def test_a_stale_host_is_detected_and_replaced(testbed, hosts):
    victim = testbed.hosts()[-1]  # as recorded now (earlier tests may have replaced it)
    inside = network.pids_in(victim.network.netns)
    os.kill(victim.nspawn_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.alive(victim.nspawn_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [row["healthy"] for row in testbed.status()] == [True] * (len(hosts) - 1) + [False]

    replaced = testbed.up(len(hosts))

    assert replaced[-1].nspawn_pid != victim.nspawn_pid
    assert not [pid for pid in inside if processes.alive(pid)], "the old container lingers"
    assert all(h.healthy() for h in replaced)
    assert len(nspawn_pids(testbed)) == len(hosts)
    assert testbed.ssh(replaced[-1], "systemctl is-system-running --wait").strip() == "running"


def test_leftovers_of_a_crashed_testbed_are_cleaned(testbed, hosts):
    orphans = nspawn_pids(testbed) + [
        pid for h in testbed.hosts() for pid in network.pids_in(h.network.netns)
    ]
    testbed.state_file.unlink()  # the testbed "crashed": it no longer knows its hosts

    fresh = testbed.up(len(hosts))

    assert not any(processes.alive(pid) for pid in orphans)
    assert sorted(h.nspawn_pid for h in fresh) == nspawn_pids(testbed)
    assert len(mounts_under(testbed.hosts_dir)) == len(hosts)


def test_down_leaves_no_process_namespace_link_or_mount(testbed, hosts):
    recorded = [pid for h in testbed.hosts() for pid in (h.nspawn_pid, h.proxy_pid, h.ntp_pid)]
    inside = [pid for h in testbed.hosts() for pid in network.pids_in(h.network.netns)]
    assert len(inside) > len(hosts), "each host runs systemd, sshd and more"

    testbed.down()

    assert not [pid for pid in recorded + inside if processes.alive(pid)]
    assert nspawn_pids(testbed) == []
    assert network.our_namespaces() == []
    assert network.our_links() == []
    assert mounts_under(testbed.root) == []
    assert not testbed.hosts_dir.exists() or not any(testbed.hosts_dir.iterdir())
    assert testbed.hosts() == []
