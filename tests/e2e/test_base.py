"""Role base on real hosts: converge, converge again with zero changes, then verify."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from llmhost import converge
from tests.e2e.conftest import connect_testinfra

pytestmark = pytest.mark.e2e

INVENTORY = "inventories/testbed.py"


@pytest.fixture(scope="module")
def runs(hosts):
    first = converge.run(INVENTORY)
    second = converge.run(INVENTORY)
    return first, second


@pytest.fixture(scope="module")
def targets(testbed, hosts, runs):
    return [(host, connect_testinfra(testbed, host)) for host in hosts]


def test_converge_succeeds_on_every_host(hosts, runs):
    first, _ = runs
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.errors == 0
    ran_on = {name for op in first.report["results"]["operations"]
              for name in op["success"] + op["no_change"]}  # fmt: skip
    assert ran_on == {h.name for h in hosts}


def test_second_converge_changes_nothing(runs):
    _, second = runs
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.errors == 0
    assert second.changes == 0, f"changed on the second run: {second.changed_operations()}"
    assert second.totals["no_change"] > 0


def test_dry_run_shows_drift_without_repairing_it_and_a_converge_repairs_it(testbed, hosts, runs):
    drifted = hosts[0]
    testbed.ssh(drifted, "rm /etc/llmhost/egress.env")

    dry = converge.run(INVENTORY, dry=True)

    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.planned_changes() == {
        "llmhost base | Egress environment for llmhost units and tools": [drifted.name]
    }
    assert testbed.ssh(drifted, "ls /etc/llmhost/egress.env", check=False) == ""
    repaired = converge.run(INVENTORY)
    assert repaired.changed_operations() == [
        f"llmhost base | Egress environment for llmhost units and tools on {drifted.name}"
    ]
    assert testbed.ssh(drifted, "ls /etc/llmhost/egress.env").strip() == "/etc/llmhost/egress.env"


def test_sshd_is_key_only(testbed, targets):
    for host, target in targets:
        effective = target.check_output("sshd -T")
        for line in (
            "passwordauthentication no",
            "kbdinteractiveauthentication no",
            "permitrootlogin without-password",
            "authenticationmethods publickey",
            "pubkeyauthentication yes",
        ):
            assert line in effective.splitlines(), (host.name, line)
        dropin = target.file("/etc/ssh/sshd_config.d/10-llmhost.conf")
        assert (dropin.user, dropin.group, dropin.mode) == ("root", "root", 0o644)
        assert target.service("ssh").is_running


def test_password_login_is_refused_for_real(testbed, targets):
    for host, _ in targets:
        attempt = subprocess.run(
            ["ssh", "-o", f"UserKnownHostsFile={testbed.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "PubkeyAuthentication=no",
             "-o", "PreferredAuthentications=password,keyboard-interactive",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{host.address}", "true"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert attempt.returncode == 255
        assert "Permission denied (publickey)" in attempt.stderr


def test_firewall_is_active_default_deny_with_ssh_open(targets):
    for host, target in targets:
        unit = target.service("llmhost-firewall")
        assert unit.is_running and unit.is_enabled, host.name
        table = target.check_output("nft list table inet llmhost")
        assert "type filter hook input priority filter; policy drop;" in table
        assert "tcp dport 22 accept" in table
        rules = target.file("/etc/llmhost/firewall.d/00-ssh.nft")
        assert (rules.user, rules.mode) == ("root", 0o640)


def test_firewall_drops_traffic_to_an_undeclared_port(targets):
    host, target = targets[0]
    target.check_output(
        "systemd-run --unit=llmhost-e2e-listener --collect python3 -m http.server 9999"
    )
    try:
        deadline = time.monotonic() + 10
        while "9999" not in target.check_output("ss -ltnH") and time.monotonic() < deadline:
            time.sleep(0.2)
        inside = target.run("python3 -c \"import urllib.request as u; "
                            "print(u.urlopen('http://127.0.0.1:9999/').status)\"")  # fmt: skip
        assert inside.stdout.strip() == "200", "listener is up on the host itself"
        with pytest.raises(TimeoutError):  # dropped, not refused: default deny
            socket.create_connection((host.address, 9999), timeout=3)
        with socket.create_connection((host.address, 22), timeout=3) as ssh:
            assert ssh.recv(64).startswith(b"SSH-2.0-")
    finally:
        target.run("systemctl stop llmhost-e2e-listener")


def test_time_is_synchronised_from_the_configured_server(targets):
    for host, target in targets:
        chrony = target.service("chrony")
        assert chrony.is_running and chrony.is_enabled, host.name
        deadline = time.monotonic() + 60
        tracking = ""
        while time.monotonic() < deadline:
            tracking = target.check_output("chronyc -n tracking")
            if f"({host.gateway})" in tracking and "Leap status     : Normal" in tracking:
                break
            time.sleep(1)
        assert f"({host.gateway})" in tracking, tracking
        assert "Leap status     : Normal" in tracking, tracking


def test_service_user_and_directories(targets):
    for _, target in targets:
        user = target.user("llmhost")
        assert user.exists and user.uid < 1000
        assert user.shell == "/usr/sbin/nologin"
        assert user.home == "/var/lib/llmhost"
        for path, owner, group, mode in (
            ("/etc/llmhost", "root", "llmhost", 0o750),
            ("/var/lib/llmhost", "llmhost", "llmhost", 0o750),
            ("/etc/llmhost/egress.env", "root", "llmhost", 0o640),
            ("/etc/apt/apt.conf.d/80llmhost-proxy", "root", "root", 0o640),
        ):
            found = target.file(path)
            assert (found.user, found.group, found.mode) == (owner, group, mode), path


def test_packages_came_through_the_egress_proxy(testbed, targets):
    for host, target in targets:
        proxy = f"http://{host.gateway}:8888"
        assert f"HTTPS_PROXY={proxy}" in target.file("/etc/llmhost/egress.env").content_string
        log = (testbed.hosts_dir / host.name / "proxy" / "tinyproxy.log").read_text()
        assert "deb.debian.org" in log


def test_the_egress_proxy_refuses_destinations_other_than_the_registries(targets):
    host, target = targets[0]
    # The proxy answers itself (filtered before it connects anywhere).
    probe = target.run(
        'python3 -c "import urllib.request as u, urllib.error as e\n'
        f"o = u.build_opener(u.ProxyHandler({{'http': 'http://{host.gateway}:8888'}}))\n"
        "try:\n  o.open('http://example.com/', timeout=10)\n"
        'except e.HTTPError as x:\n  print(x.code)"'
    )
    assert probe.stdout.strip() == "403", probe.stderr
