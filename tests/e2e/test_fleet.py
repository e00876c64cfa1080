"""The fleet and its disaster recovery, on three hosts without egress.

tb1 keeps the registry and monitoring; tb2 and tb3 are booted blank and serve the same
model with the same data: twins. Their proxies forward nowhere, so everything they get
comes from tb1's registry and their Debian archive mirror. The module converges the
three in parallel, compares the twins' fingerprints, destroys tb3 and rebuilds it
(`llmhost rebuild`, egress closed) until its fingerprint equals tb2's, then rolls a new
release out with a canary batch of one whose gate fails: the rollout stops there and tb3
is not touched.

It replaces tb2 (the other modules' disaster-recovery registry) with a blank host and
takes the hosts down at its end, so it runs after every module that shares the standing
hosts (see conftest's RUN_LAST).
"""

from __future__ import annotations

import json

import pytest

from llmhost import converge
from llmhost.onhost.layout import STATE_FILE
from llmhost.secrets import api_keys
from llmhost.testing.testbed import Testbed, TestbedHost
from tests.e2e.conftest import cli, publish
from tests.e2e.test_gateway import completion_body, request

pytestmark = pytest.mark.e2e

MODEL = "rt-one"
SERVING = ("tb2", "tb3")


def fleet_inventory(path, testbed: Testbed, hosts: list[TestbedHost], **serving_edits) -> str:
    """tb1: registry and monitoring, egress as usual; tb2, tb3: serving, no egress."""
    entries = []
    for host in hosts:
        if host.name in SERVING:
            data = testbed.inventory_data(host, egress=False)
            data.update({"model_name": MODEL, **serving_edits.get(host.name, {})})
        else:
            data = testbed.inventory_data(host)
        entries.append((host.name, data))
    path.write_text(
        f"testbed = {entries!r}\nregistry = testbed[:1]\nmonitoring = testbed[:1]\n"
        "serving = testbed[1:]\n"
    )
    return str(path)


def served(testbed: Testbed, host: TestbedHost) -> dict:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def proxy_log(testbed: Testbed, host: TestbedHost) -> str:
    log = testbed.hosts_dir / host.name / "proxy" / "tinyproxy.log"
    return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture(scope="module")
def fleet(testbed, published, tmp_path_factory):
    """tb2 and tb3 blank with egress closed, then the three converged in one parallel run.

    Earlier modules bring the hosts back blank (test_testbed, test_upgrade), so tb1's registry is
    published to again first."""
    publish(testbed)
    testbed.recreate("tb2")
    hosts = testbed.up(3)
    for host in hosts[1:]:
        testbed.set_egress(host, open_=False)
    path = fleet_inventory(tmp_path_factory.mktemp("fleet") / "inventory.py", testbed, hosts)
    first = converge.run(path)
    try:
        yield path, testbed.hosts(), first
    finally:
        # tb2 and tb3 now take packages from their archive mirrors, which no other module's
        # data names: leave no host behind (the walk-through boots its own, as a newcomer).
        testbed.down()


def test_three_hosts_converge_in_parallel_without_egress_and_serve(fleet, testbed):
    _, hosts, first = fleet
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    key = api_keys(testbed.root / "secrets")["tests"]
    for host in hosts[1:]:
        assert served(testbed, host)["active"] == "blue"
        status, body, _ = request(testbed, host, key, completion_body())
        assert status == 200, body
        assert "CONNECT" not in proxy_log(testbed, host), f"{host.name} reached its proxy"
    ran = {op["name"]: op for op in first.report["results"]["operations"]}
    base = [op for name, op in ran.items() if name.startswith("llmhost base")]
    assert any(set(SERVING) <= set(op["success"]) for op in base), (
        "one run changed both serving hosts: pyinfra ran each operation on both at once"
    )


def test_the_twins_fingerprints_are_equal_and_a_changed_file_shows(fleet, testbed):
    path, hosts, _ = fleet
    same = cli("fingerprint", path, "tb3", "--against", "tb2")
    assert same.returncode == 0, same.stdout + same.stderr[-3000:]
    assert json.loads(same.stdout)["differences"] == {"tb3": []}
    printed = cli("fingerprint", path, "tb3")
    found = json.loads(printed.stdout)["tb3"]
    assert found["serving"]["release"]["model"] == MODEL
    assert found["serving"]["executable_sha256"]
    assert "nginx" in found["packages"]
    tb3 = next(h for h in hosts if h.name == "tb3")
    assert tb3.address not in printed.stdout, "the host's own address is replaced, not hashed"
    edited_file = "/etc/llmhost/firewall.nft"
    testbed.ssh(tb3, f"echo '# edited by hand' >> {edited_file}")
    try:
        edited = cli("fingerprint", path, "tb3", "--against", "tb2")
        assert edited.returncode == 1, edited.stdout
        (line,) = json.loads(edited.stdout)["differences"]["tb3"]
        assert edited_file in line and "sha256" in line
    finally:
        testbed.ssh(tb3, f"sed -i '/# edited by hand/d' {edited_file}")


def lock_the_twins_packages(path: str, testbed: Testbed, hosts, tmp_path) -> str:
    """tb2's packages locked, the lock set for both twins, and tb2 converged with it."""
    lock = tmp_path / "packages.json"
    taken = cli("lock-packages", path, "tb2", "--out", str(lock))
    assert taken.returncode == 0, taken.stderr[-3000:]
    packages = json.loads(lock.read_text())["packages"]
    assert (
        packages["nginx"]
        == json.loads(cli("fingerprint", path, "tb2").stdout)["tb2"]["packages"]["nginx"]
    ), "the lock holds the twin's own versions"
    with_lock = {"base_package_lock": str(lock)}
    locked = fleet_inventory(
        tmp_path / "inventory.py", testbed, hosts, tb2=with_lock, tb3=with_lock
    )
    pinned = converge.run(locked, limit=("tb2",))
    assert pinned.returncode == 0 and pinned.errors == 0, pinned.stderr[-4000:]
    assert pinned.changed_operations() == [
        f"llmhost base | APT: {len(packages)} packages pinned by {lock} on tb2"
    ], "pinning a host to its own versions changes that one file, no package"
    return locked


def test_a_destroyed_host_is_rebuilt_blank_without_egress_and_equals_its_twin(
    fleet, testbed, tmp_path
):
    unlocked, hosts, _ = fleet
    refused = cli("rebuild", unlocked, "tb3", "--twin", "tb2")
    assert refused.returncode == 2 and "key `base_package_lock`" in refused.stderr, refused.stderr
    path = lock_the_twins_packages(unlocked, testbed, hosts, tmp_path)
    blank = testbed.recreate("tb3")
    testbed.set_egress(blank, open_=False)
    assert testbed.ssh(blank, f"test -e {STATE_FILE} && echo kept || echo blank").strip() == "blank"
    rebuilt = cli("rebuild", path, "tb3", "--twin", "tb2")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-6000:]
    verdict = json.loads(rebuilt.stdout)
    assert verdict["equal"] and verdict["differences"] == []
    assert verdict["needs_outside"] == [], "only tb1's registry and the archive mirror"
    assert verdict["changes"]["first"] > 0 and verdict["changes"]["second"] == 0
    assert verdict["pins"]["model"].startswith(f"{MODEL}@sha256:")
    assert "sha256:" in verdict["pins"]["engine"]
    lock = tmp_path / "packages.json"
    assert verdict["pins"]["packages"].endswith(f"Debian packages at the versions in {lock}")
    assert "tb3 needs nothing from outside" in rebuilt.stderr
    assert "CONNECT" not in proxy_log(testbed, blank), "the rebuild never used the proxy"
    key = api_keys(testbed.root / "secrets")["tests"]
    assert request(testbed, blank, key, completion_body())[0] == 200


def test_a_canary_whose_gate_fails_stops_the_rollout_and_leaves_the_other_host_untouched(
    fleet, testbed, tmp_path
):
    _, hosts, _ = fleet
    canary, rest = (next(h for h in hosts if h.name == name) for name in SERVING)
    before = {h.name: served(testbed, h) for h in (canary, rest)}
    new_release = {"runtime_extra_args": ["--threads", "1"]}
    path = fleet_inventory(
        tmp_path / "inventory.py",
        testbed,
        hosts,
        tb2={**new_release, "gate_limits": {"ttft_p95_ms": 0.001}},
        tb3=new_release,
    )
    rolled = cli("deploy", path, "--limit", "serving", "--batch-size", "1", "--canary", "1", "-y")
    assert rolled.returncode == 1, rolled.stderr[-3000:]
    assert "rollout in 2 batch(es): 1: tb2; 2: tb3" in rolled.stderr
    assert "failed its gate: ttft_p95_ms" in rolled.stderr, rolled.stderr[-6000:]
    assert "batch 1 failed; rollout stopped. Not touched: tb3" in rolled.stderr
    assert served(testbed, canary)["active"] == before["tb2"]["active"]
    assert not served(testbed, canary)["last_gate"]["passed"]
    assert served(testbed, rest) == before["tb3"], "tb3 was not touched"
    key = api_keys(testbed.root / "secrets")["tests"]
    assert request(testbed, canary, key, completion_body())[0] == 200, "the old release serves"
