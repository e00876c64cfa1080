"""Bad inventory input fails before any host is changed, naming host, key and fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmhost import converge
from llmhost.paths import REPO_ROOT
from tests.e2e.conftest import write_inventory

pytestmark = pytest.mark.e2e

SENTINEL = "/etc/llmhost/egress.env"


@pytest.fixture
def converged_with_sentinel_removed(testbed, hosts):
    """Both hosts converged, then one file removed that any base run would restore."""
    result = converge.run("inventories/testbed.py")
    assert result.returncode == 0, result.stderr[-2000:]
    for host in hosts:
        testbed.ssh(host, f"rm -f {SENTINEL}")
    yield
    converge.run("inventories/testbed.py")


def assert_untouched(testbed, hosts):
    for host in hosts:
        assert testbed.ssh(host, f"test -e {SENTINEL} && echo present || echo absent").strip() == (
            "absent"
        ), f"{host.name} was changed by a run that should have stopped in preflight"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"region": None}, "key `region`: is missing"),
        (
            {"region": "us-east-1"},
            "key `region`: 'us-east-1' is outside `residency_allowed_regions`",
        ),
        ({"hardware": "a100"}, "key `hardware`: 'a100' is not a class in hardware.toml"),
        (
            {"base_ntp_servers": ["time.example.net"]},
            "key `base_ntp_servers`: ntp time.example.net (chrony) has no declared region",
        ),
        (
            {"residency_endpoints": {"10.231.2.1": "us-east"}},
            "key `base_http_proxy`: egress-proxy http://10.231.2.1:8888 is in 'us-east'",
        ),
    ],
    ids=[
        "missing-region",
        "region-outside-policy",
        "unknown-hardware",
        "undeclared-endpoint",
        "endpoint-outside-policy",
    ],
)
def test_bad_host_data_stops_every_host_before_any_change(
    tmp_path, testbed, hosts, converged_with_sentinel_removed, edit, expected
):
    bad = hosts[-1].name
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{bad: edit})

    result = converge.run(inventory)

    assert result.returncode != 0
    assert f"host {bad}: {expected}" in result.stderr
    assert "Fix: " in result.stderr
    assert result.report is None, "pyinfra printed results: operations ran"
    assert "Beginning operation run" not in result.stderr
    assert_untouched(testbed, hosts)

    checked = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "check", inventory],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert checked.returncode == 1, "problems found"
    assert f"host {bad}: {expected}" in checked.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"gateway_prot": 8443}, "key `gateway_prot`: is not an llmhost setting"),
        ({"residency_allowed_regions": ["gb", "us"]}, "key `residency_allowed_regions`"),
        ({"base_ssh_port": "22"}, "key `base_ssh_port`: expected int, got str"),
        ({"base_http_proxy": "egress:3128"}, "key `base_http_proxy`"),
        ({"model_name": "not-in-the-catalog"}, "key `model_name`"),
        (
            {"base_ntp_servers": ["time.example.net"]},
            "key `base_ntp_servers`: ntp time.example.net (chrony) has no declared region",
        ),
    ],
    ids=[
        "misspelt-setting",
        "policy-on-a-host",
        "port-as-string",
        "proxy-no-scheme",
        "model",
        "undeclared-endpoint",
    ],
)
def test_llmhost_deploy_checks_every_role_offline_and_runs_nothing(
    tmp_path, testbed, hosts, converged_with_sentinel_removed, edit, expected
):
    bad = hosts[-1].name
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{bad: edit})

    result = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "deploy", inventory, "-y"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert f"host {bad}: {expected}" in result.stderr
    assert "nothing was deployed" in result.stderr
    assert "Traceback" not in result.stderr
    assert "--> Loading inventory" not in result.stderr, "pyinfra was started"
    assert_untouched(testbed, hosts)


def test_an_inventory_with_no_hosts_is_refused(tmp_path, testbed, hosts):
    empty = tmp_path / "empty.py"
    empty.write_text("serving = []\n")
    for argv in (
        ["deploy", str(empty)],
        ["deploy", "inventories/testbed.py", "--limit", "no-such-host"],
        ["check", str(tmp_path / "typo.py")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "llmhost.cli", *argv],
            capture_output=True, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 2, argv
        assert "error: " in result.stderr and "Fix: " in result.stderr, result.stderr


def test_testbed_inventory_without_a_testbed_fails_instead_of_doing_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventories/testbed.py", "deploy/site.py", "-y"],
        capture_output=True, text=True, cwd=REPO_ROOT,
        env={"LLMHOST_TESTBED_DIR": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "no testbed hosts are up" in result.stdout + result.stderr
    assert "llmhost testbed up" in result.stdout + result.stderr
