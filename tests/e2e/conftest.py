"""Real hosts for end-to-end tests: the testbed, booted once per session.

Tests that need hosts call ``testbed.up(2)`` themselves (cheap when they are
already up and healthy), so no test depends on another having run first. The
session ends with ``testbed down``: there is one testbed per machine, and the
tests own it while they run.
Without root or the testbed's tools the tests are skipped with the reason,
unless LLMHOST_REQUIRE_E2E=1 (as the README's test command sets), where that is
an error: CI must never pass by skipping the hosts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import paramiko
import pytest
import testinfra

from llmhost.testbed import Testbed, TestbedHost
from llmhost.testbed.testbed import REQUIRED_TOOLS

HOSTS = 2


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return (
            "the testbed boots hosts with systemd-nspawn and makes network namespaces: needs root"
        )
    missing = sorted(tool for tool in REQUIRED_TOOLS if not shutil.which(tool))
    if missing:
        return f"testbed tools missing: {', '.join(missing)} (scripts/setup installs them)"
    return None


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    reason = _missing_prerequisite()
    if reason:
        if os.environ.get("LLMHOST_REQUIRE_E2E") == "1":
            pytest.fail(f"end-to-end tests required but cannot run: {reason}")
        pytest.skip(reason)
    bed = Testbed()
    try:
        bed.up(HOSTS)
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="module")
def hosts(testbed: Testbed) -> list[TestbedHost]:
    return testbed.up(HOSTS)


def connect_testinfra(testbed: Testbed, host: TestbedHost) -> testinfra.host.Host:
    """A testinfra host over paramiko that refuses unknown host keys.

    The plugin's own connection accepts any host key with a warning, so the
    client is made here with the testbed's known_hosts and a reject policy.
    """
    target = testinfra.get_host(
        f"paramiko://root@{host.address}?ssh_identity_file={testbed.ssh_key}"
    )
    client = paramiko.SSHClient()
    client.load_host_keys(str(testbed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username="root", key_filename=str(testbed.ssh_key), timeout=10)
    target.backend.__dict__["client"] = client
    return target


def write_inventory(path, testbed: Testbed, hosts: list[TestbedHost], **edits) -> str:
    """An inventory file of the testbed hosts, with per-host data edits.

    ``edits`` maps a host name to {key: value}; a value of None removes the key.
    The first two hosts form the `registry` group, as in inventories/testbed.py.
    """
    entries = []
    for host in hosts:
        data = testbed.inventory_data(host)
        for key, value in edits.get(host.name, {}).items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        entries.append((host.name, data))
    path.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\n")
    return str(path)
