"""Monitoring on real hosts: exporters scraped, alerts loaded and firing, no unwatched cutover.

tb1 is the monitoring host (Prometheus, Alertmanager) and the registry; tb2 serves rt-one
and runs the GPU exporter although it has no GPU (it must say so, not crash). Prometheus's
API is asked from tb1 itself (its port is closed to everyone else).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from llmhost import converge
from llmhost.onhost.layout import STATE_FILE
from roles.runtime.defaults import unit_name
from tests.e2e.conftest import write_inventory

pytestmark = pytest.mark.e2e

SERVING = {"model_name": "rt-one", "monitoring_gpu_exporter": True}


def prometheus(testbed, monitor, path: str) -> dict:
    """GET Prometheus's API on the monitoring host, from the host itself (no curl there)."""
    script = (
        "import sys, urllib.request; "
        f"print(urllib.request.urlopen('http://127.0.0.1:9090{path}', timeout=10).read().decode())"
    )
    answer = json.loads(testbed.ssh(monitor, f'python3 -c "{script}"'))
    assert answer["status"] == "success", answer
    return answer["data"]


def query(testbed, monitor, expression: str) -> list[dict]:
    return prometheus(testbed, monitor, f"/api/v1/query?query={quote(expression)}")["result"]


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {seconds:.0f} s")
        time.sleep(3)


@pytest.fixture(scope="module")
def watched(tmp_path_factory, testbed, hosts, published):
    """Both hosts converged with monitoring; tb2 serving rt-one (blue active)."""
    path = write_inventory(
        tmp_path_factory.mktemp("monitoring") / "inventory.py",
        testbed,
        hosts,
        **{hosts[1].name: SERVING},
    )
    first = converge.run(path)
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    second = converge.run(path)
    assert second.returncode == 0 and second.changes == 0, second.changed_operations()
    return path


def test_every_exporter_of_every_host_is_scraped(testbed, hosts, watched):
    monitor, serving = hosts

    def all_up():
        targets = prometheus(testbed, monitor, "/api/v1/targets")["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"].get("host"), t.get("labels", {}).get("colour"))
                : t["health"] for t in targets}  # fmt: skip
        wanted = {
            ("node", monitor.name, None), ("node", serving.name, None),
            ("gpu", serving.name, None), ("gateway", serving.name, None),
            ("runtime", serving.name, "blue"),
            ("registry", monitor.name, None), ("registry", serving.name, None),
        }  # fmt: skip
        scraped = seen.get(("runtime", serving.name, "green"), "unknown") != "unknown"
        return seen if scraped and all(seen.get(k) == "up" for k in wanted) else None

    seen = wait_for(all_up, 90, "every target up")
    assert seen[("runtime", serving.name, "green")] == "down", "the idle colour is stopped"


def test_a_host_without_a_gpu_says_so_and_keeps_serving_metrics(testbed, hosts, watched):
    monitor, serving = hosts
    reason = query(testbed, monitor, f'llmhost_gpu_up_reason{{host="{serving.name}"}}')
    assert query(testbed, monitor, f'llmhost_gpu_up{{host="{serving.name}"}}')[0]["value"][1] == "0"
    assert "libnvidia-ml" in reason[0]["metric"]["reason"]
    assert testbed.ssh(serving, "systemctl is-active llmhost-gpu-exporter").strip() == "active"


def test_the_rules_are_loaded_and_the_state_is_exported(testbed, hosts, watched):
    monitor, serving = hosts
    groups = {g["name"] for g in prometheus(testbed, monitor, "/api/v1/rules")["groups"]}
    assert {"llmhost-hosts", "llmhost-runtime", "llmhost-gateway", "llmhost-gpu"} <= groups
    # Written at the deploy's last state change: seen at the next scrape.
    active = wait_for(
        lambda: query(testbed, monitor, f'llmhost_colour_active{{host="{serving.name}"}} == 1'),
        60,
        "the state's metrics",
    )
    assert [r["metric"]["colour"] for r in active] == ["blue"]


def test_stopping_the_active_colour_fires_its_alert(testbed, hosts, watched):
    monitor, serving = hosts
    testbed.ssh(serving, f"systemctl stop {unit_name('blue')}")
    try:
        firing = wait_for(
            lambda: [
                a
                for a in prometheus(testbed, monitor, "/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "ActiveColourNotServing"
                and a["labels"].get("host") == serving.name
                and a["state"] == "firing"
            ],
            60 + 15 + 30,  # the rule's `for`, a scrape, and an evaluation
            "ActiveColourNotServing firing",
        )
        assert firing[0]["labels"]["colour"] == "blue"
    finally:
        testbed.ssh(serving, f"systemctl start {unit_name('blue')}")


def test_a_cutover_on_a_host_nobody_scrapes_is_refused(testbed, hosts, watched, tmp_path):
    monitor, serving = hosts
    before = json.loads(testbed.ssh(serving, f"cat {STATE_FILE}"))
    testbed.ssh(serving, "systemctl stop prometheus-node-exporter")
    try:
        wait_for(
            lambda: query(testbed, monitor, f'up{{job="node",host="{serving.name}"}} == 0'),
            60,
            "the node target down",
        )
        path = write_inventory(
            tmp_path / "inventory.py",
            testbed,
            hosts,
            **{
                hosts[1].name: {
                    **SERVING,
                    "runtime_extra_args": ["--threads", "1"],  # a new release of rt-one
                    "monitoring_cutover_wait_s": 5,
                }
            },
        )
        # The node exporter is left stopped by this run: only its own restart would start it.
        result = converge.run(path, deploy="deploy/runtime.py")
        assert result.returncode == 0, result.stderr[-3000:]
        cut = converge.run(path, deploy="deploy/cutover.py")
        assert cut.returncode != 0
        assert f"no monitoring host watches {serving.name}" in cut.stderr, cut.stderr[-3000:]
        after = json.loads(testbed.ssh(serving, f"cat {STATE_FILE}"))
        assert after["active"] == before["active"], "nothing was switched"
    finally:
        testbed.ssh(serving, "systemctl start prometheus-node-exporter")
