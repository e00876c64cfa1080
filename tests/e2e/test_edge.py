"""The edge on real hosts: HAProxy on tb3 in front of tb1's and tb2's gateways.

Clients on this machine reach the edge over HTTPS (its certificate from the llmhost CA).
The module converges the three, then rolls a new release out to both serving hosts under
steady streaming load through the edge: each host leaves the edge's pool for its switch
and rejoins before the next one's, and no request fails. It leaves tb3 blank again for
the fleet, which takes it as a serving twin (it runs before the fleet: conftest's
RUN_LAST).
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import threading
import time
from dataclasses import dataclass, field

import pytest

from llmhost import converge
from llmhost.secrets import api_keys
from llmhost.testing.testbed import Testbed, TestbedHost
from roles.edge.defaults import ADMIN_SOCKET, CONFIG, EdgeSettings
from tests.e2e.conftest import connect_testinfra
from tests.e2e.test_gateway import LOAD_LIMITS, completion_body, state, tls_context

pytestmark = pytest.mark.e2e

EDGE_PORT = EdgeSettings().edge_port
SERVING = ("tb1", "tb2")


def edge_inventory(path, testbed: Testbed, hosts: list[TestbedHost], model: str) -> str:
    """tb1 and tb2 serve ``model`` (tb1 is also the registry and monitoring host); tb3 is
    the edge over them."""
    entries = []
    for host in hosts:
        data = testbed.inventory_data(host)
        if host.name in SERVING:
            data.update({"model_name": model, **LOAD_LIMITS})
        entries.append((host.name, data))
    path.write_text(
        f"testbed = {entries!r}\nregistry = testbed[:2]\nmonitoring = testbed[:1]\n"
        "serving = testbed[:2]\nedge = testbed[2:]\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def edge_hosts(testbed, published, tmp_path_factory):
    """The three converged: tb1 and tb2 serving rt-one, tb3 the edge; tb3 blank after."""
    hosts = testbed.up(3)
    path = edge_inventory(
        tmp_path_factory.mktemp("edge") / "inventory.py", testbed, hosts, "rt-one"
    )
    first = converge.run(path)
    edge_lines = "\n".join(line for line in first.stderr.splitlines() if "tb3" in line)
    assert first.returncode == 0 and first.errors == 0, edge_lines[-3000:] + first.stderr[-3000:]
    try:
        yield hosts, path
    finally:
        testbed.recreate("tb3")


def through_edge(testbed, edge: TestbedHost, key: str | None, body: bytes, path="/v1/completions"):
    connection = http.client.HTTPSConnection(
        edge.address, EDGE_PORT, context=tls_context(testbed), timeout=60
    )
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def servers_state(testbed, edge: TestbedHost) -> dict[str, str]:
    """Server name -> HAProxy's operational state ("2": up, "0": down), from its socket."""
    lines = testbed.ssh(
        edge, f"echo 'show servers state llmhost_serving' | socat stdio {ADMIN_SOCKET}"
    ).splitlines()
    header = lines[1].lstrip("# ").split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines[2:] if line.strip()]
    return {row["srv_name"]: row["srv_op_state"] for row in rows}


def test_the_edge_converges_serves_through_both_hosts_and_changes_nothing_again(
    testbed, edge_hosts
):
    hosts, path = edge_hosts
    edge = hosts[2]
    key = api_keys(testbed.root / "secrets")["tests"]
    status, data = through_edge(testbed, edge, key, completion_body())
    assert status == 200, data
    assert json.loads(data)["choices"]
    assert through_edge(testbed, edge, None, completion_body())[0] == 401, "gateways check keys"
    assert servers_state(testbed, edge) == {"tb1": "2", "tb2": "2"}
    for _ in range(6):
        assert through_edge(testbed, edge, key, completion_body(1))[0] == 200
    for host in hosts[:2]:
        served = testbed.ssh(host, "grep -c '\"status\":200' /var/log/nginx/llmhost-audit.log")
        assert int(served) > 0, f"{host.name} served nothing through the edge"
    again = converge.run(path)
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()


def test_the_edge_runs_sandboxed_and_exports_its_metrics_to_the_monitoring_host(
    testbed, edge_hosts
):
    hosts, _ = edge_hosts
    edge = connect_testinfra(testbed, hosts[2])
    assert edge.service("haproxy").is_running and edge.service("haproxy").is_enabled
    shown = edge.run("systemctl show haproxy -p NoNewPrivileges -p ProtectSystem").stdout
    assert "NoNewPrivileges=yes" in shown and "ProtectSystem=strict" in shown
    assert f"-f {CONFIG}" in edge.run("ps -o args= -C haproxy").stdout
    key = edge.file("/etc/haproxy/llmhost/edge.pem")
    assert key.mode == 0o600 and key.user == "root"
    url = f"http://{hosts[2].address}:{EdgeSettings().edge_metrics_port}/metrics"
    metrics = testbed.ssh(hosts[0], fetch(url))
    assert 'haproxy_server_status{proxy="llmhost_serving",server="tb1",state="UP"} 1' in metrics
    refused = testbed.ssh(hosts[1], f"{fetch(url)} || echo refused", check=False)
    assert "refused" in refused, "only the monitoring host may read the edge's metrics"


def fetch(url: str) -> str:
    """A command that prints ``url``'s body (the hosts have python3, not curl)."""
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read().decode())"
    )
    return f"python3 -c {shlex.quote(code)}"


@dataclass
class EdgeLoad:
    """Streaming clients through the edge, each request on a new connection, until stopped."""

    testbed: object
    edge: TestbedHost
    key: str
    clients: int = 12
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self) -> None:
        try:
            status, data = through_edge(
                self.testbed, self.edge, self.key, completion_body(8, stream=True)
            )
            good = status == 200 and data.rstrip().endswith(b"data: [DONE]")
            problem = f"{status}: {data[-200:]!r}"
        except (OSError, http.client.HTTPException) as error:
            good, problem = False, repr(error)
        with self.lock:
            if good:
                self.ok += 1
            else:
                self.failed.append(problem)

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()

    def __enter__(self) -> EdgeLoad:
        self.threads = [threading.Thread(target=self.run) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.ok + len(self.failed) < total and time.monotonic() < deadline:
            time.sleep(0.5)


def pool_changes(testbed, edge: TestbedHost, since: str) -> list[tuple[str, str]]:
    """(server, "DOWN" or "UP") in the order HAProxy logged them since ``since``.

    HAProxy reports each change on its stderr and to syslog, so the journal has it twice.
    """
    log = testbed.ssh(edge, f"journalctl -u haproxy --since '{since}' -o cat --no-pager")
    found = re.findall(r"Server llmhost_serving/(\w+) is (DOWN|UP)", log)
    return [change for i, change in enumerate(found) if i == 0 or found[i - 1] != change]


def test_each_host_leaves_the_pool_for_its_cutover_in_turn_and_no_request_fails(
    testbed, edge_hosts, tmp_path
):
    hosts, _ = edge_hosts
    edge = hosts[2]
    key = api_keys(testbed.root / "secrets")["tests"]
    before = {host.name: state(testbed, host)["active"] for host in hosts[:2]}
    since = testbed.ssh(edge, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
    path = edge_inventory(tmp_path / "inventory.py", testbed, hosts, "rt-two")
    with EdgeLoad(testbed, edge, key) as load:
        load.wait_for(100)
        deployed = converge.run(path)  # both hosts: pull, stage, gate, then cut over in turn
        load.wait_for(load.ok + len(load.failed) + 100)
    total = load.ok + len(load.failed)
    changes = pool_changes(testbed, edge, since)
    print(f"through the edge: {total} requests, {len(load.failed)} failed; pool: {changes}")
    assert deployed.returncode == 0 and deployed.errors == 0, deployed.stderr[-4000:]
    assert load.failed == [], load.failed[:3]
    assert total >= 200
    for host in hosts[:2]:
        assert state(testbed, host)["active"] != before[host.name], f"{host.name} cut over"
    assert changes in (
        [("tb1", "DOWN"), ("tb1", "UP"), ("tb2", "DOWN"), ("tb2", "UP")],
        [("tb2", "DOWN"), ("tb2", "UP"), ("tb1", "DOWN"), ("tb1", "UP")],
    ), "one host at a time left the pool, and came back before the next left"
    assert servers_state(testbed, edge) == {"tb1": "2", "tb2": "2"}
    for host in hosts[:2]:
        flag = testbed.ssh(host, "test -e /run/llmhost-gateway-drain && echo left || echo gone")
        assert flag.strip() == "gone"
