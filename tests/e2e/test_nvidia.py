"""The nvidia role on real hosts, as far as hosts without GPUs and without NVIDIA's servers go.

The testbed's hosts have no NVIDIA device and their egress proxy lets only the Debian archive
through, so what is proven here is everything before a driver is installed:

- `cpu` hosts converge with the role as a noop: no operation of it changes anything, and none
  of its files appear;
- a GPU class host without its GPU stops in preflight, before any host is changed, with the
  host, the key and the fix, and nothing of the NVIDIA stack is on it;
- a GPU class host allowed to install without GPUs (`nvidia_require_gpus = false`) gets as far
  as NVIDIA's repository key, whose download the proxy refuses: the run fails saying so, and
  nothing was trusted (no keyring, no sources entry, no pins, no package).

The driver itself, the reboot and NVML's verdict are covered by tests/gpu on a real GPU.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from llmhost import converge
from llmhost.testing.testbed.testbed import REGION
from roles.nvidia.defaults import (
    KEY_FINGERPRINT,
    KEYRING,
    NOUVEAU_FILE,
    PREFERENCES_FILE,
    REPOSITORY,
    SOURCES_FILE,
    UNATTENDED_FILE,
)
from tests.e2e.conftest import write_inventory

pytestmark = pytest.mark.e2e

INVENTORY = "inventories/testbed.py"  # every testbed host is of class `cpu`
ROLE = "llmhost nvidia | "
NVIDIA_FILES = (KEYRING, f"{KEYRING}.new", SOURCES_FILE, PREFERENCES_FILE, UNATTENDED_FILE,
                NOUVEAU_FILE)  # fmt: skip
RELEASE = "550.127.08"
NO_GPU = {"hardware": "rtx4090", "nvidia_driver_version": RELEASE}


def gpu_class(testbed, host, **data: Any) -> dict[str, Any]:
    """The edits that make ``host`` a GPU class host (NO_GPU, then ``data``), for write_inventory.

    A GPU class host calls NVIDIA's repository, and the residency audit (the first thing
    deploy/site.py does) refuses an endpoint whose region nobody declared, before the nvidia
    role could fail the way these tests expect. So this host's data declares it, in the
    testbed's region like the testbed's other endpoints (test hosts carry nobody's data).
    Here and not in the testbed's own declarations: those say where what the testbed reaches
    is, and its proxy never forwards to NVIDIA (the key test relies on that), so no other
    testbed inventory gets to call it unremarked.
    """
    declared = {**testbed.residency_endpoints(host), urlsplit(REPOSITORY).hostname: REGION}
    return {**NO_GPU, "residency_endpoints": declared, **data}


def nvidia_files(testbed, host) -> list[str]:
    """Which of the role's files exist on ``host``."""
    tests = "; ".join(f"test -e {path} && echo {path}" for path in NVIDIA_FILES)
    return testbed.ssh(host, f"{tests}; true").split()


def nvidia_packages(testbed, host) -> list[str]:
    """Installed packages of the driver stack on ``host``."""
    listed = testbed.ssh(
        host,
        "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' 'nvidia-*' 'libnvidia-*' "
        "'cuda-drivers*' 2>/dev/null || true",
    )
    return [line.split()[1] for line in listed.splitlines() if line.startswith("ii")]


def assert_nothing_of_nvidia(testbed, host) -> None:
    assert nvidia_files(testbed, host) == [], f"{host.name} got files of the nvidia role"
    assert nvidia_packages(testbed, host) == [], f"{host.name} got NVIDIA packages"


def nvidia_changes(result: converge.RunResult) -> list[str]:
    return [op for op in result.changed_operations() if op.startswith(ROLE)]


def test_cpu_hosts_converge_with_the_role_as_a_noop(testbed, hosts):
    site = converge.run(INVENTORY)
    assert site.returncode == 0 and site.errors == 0, site.stderr[-3000:]
    assert nvidia_changes(site) == []
    alone = converge.run(INVENTORY, deploy="deploy/nvidia.py")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert alone.changes == 0 and alone.errors == 0, alone.changed_operations()
    for host in hosts:
        assert_nothing_of_nvidia(testbed, host)


def test_a_gpu_class_host_without_its_gpu_stops_in_preflight_with_nothing_installed(
    tmp_path, testbed, hosts
):
    bad = hosts[-1]
    edits = {bad.name: gpu_class(testbed, bad)}
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **edits)

    result = converge.run(inventory)

    assert result.returncode != 0
    expected = (
        f"host {bad.name}: key `hardware`: class rtx4090 has 1 NVIDIA GPU(s) "
        "(NVIDIA GeForce RTX 4090), but the PCI bus shows 0"
    )
    assert expected in result.stderr, result.stderr[-3000:]
    assert "nothing was installed. Fix: " in result.stderr
    assert result.report is None, "pyinfra printed results: operations ran"
    assert "Traceback" not in result.stderr
    for host in hosts:
        assert_nothing_of_nvidia(testbed, host)


@pytest.fixture
def restored(hosts):
    """The monitoring host's targets name the GPU class of this test's run: converge them back."""
    yield
    converge.run(INVENTORY)


def test_the_repository_key_that_cannot_be_fetched_trusts_nothing(
    tmp_path, testbed, hosts, restored
):
    host = hosts[-1]
    data = gpu_class(testbed, host, nvidia_require_gpus=False, nvidia_secure_boot_ok=True)
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{host.name: data})
    distro = testbed.ssh(host, '. /etc/os-release && echo "$ID$(echo "$VERSION_ID" | tr -d .)"')
    arch = {"x86_64": "x86_64", "aarch64": "sbsa"}[testbed.ssh(host, "uname -m").strip()]

    result = converge.run(inventory)

    assert result.returncode != 0 and result.errors >= 1, result.stderr[-3000:]
    url = (
        f"https://developer.download.nvidia.com/compute/cuda/repos/{distro.strip()}/{arch}/"
        "3bf863cc.pub"
    )
    assert (
        f"cannot download NVIDIA's key file {url} (with APT's proxy settings); nothing was trusted"
        in result.stderr
    ), result.stderr[-3000:]
    assert "the egress proxy must allow it" in result.stderr
    assert "set nvidia_apt_mirror" in result.stderr
    results = result.report["results"]
    assert results["failed_hosts"] == [host.name]
    ran = {op["name"]: op for op in results["operations"]}
    key = ran[f"{ROLE}APT: NVIDIA's repository key {KEY_FINGERPRINT}, checked before it is trusted"]
    assert host.name in key["error"]
    gpg = ran[f"{ROLE}gpg (checks NVIDIA's repository key)"]
    assert host.name in gpg["success"] + gpg["no_change"], "the step before it ran"
    assert_nothing_of_nvidia(testbed, host)  # the key's temporary name included
    assert_nothing_of_nvidia(testbed, hosts[0])
