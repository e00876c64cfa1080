"""Grafana on the testbed: its dashboards' queries against the live Prometheus, and its
repository key checked on a real host.

tb1 is the monitoring host, tb2 serves rt-one (as in test_monitoring.py).

- Every query of every dashboard (panels, annotations, variables, with Grafana's variables
  substituted: tests/unit/test_dashboards.py's ``concrete``) is evaluated by tb1's
  Prometheus without error, and after a short load through tb2's gateway every panel
  returns data, but those whose metrics the testbed cannot have (``NO_DATA_HERE`` says
  which, and why).
- Grafana's package cannot be installed here: the testbed's egress proxy forwards only to
  the Debian archive and PyPI (``EGRESS_ALLOWED``), so the install test is skipped saying
  so. What can run here does. The key check runs on tb1 for real: `monitoring_grafana_apt_mirror`
  points at a key server on tb1's own loopback, serving a key made here (whose fingerprint is
  not Grafana's); the deploy fails with the refusal and nothing is trusted. Loopback, not a
  server on this machine: a host's APT reaches everything but `base_no_proxy`'s names
  (`localhost`) through the egress proxy, which forwards to the package registries alone.
  The provisioning files are written before the key is fetched (they need nothing of the
  package), so the same failed run leaves them on tb1, where their owner, mode and content
  are checked.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shlex
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from llmhost import converge
from llmhost.secrets import api_keys, grafana_admin_password
from llmhost.settings import from_data
from llmhost.testing.testbed.testbed import EGRESS_ALLOWED
from roles.monitoring.defaults import MonitoringSettings
from roles.monitoring.grafana import (
    DASHBOARDS,
    GRAFANA_UNIT,
    KEY_FINGERPRINT,
    KEYRING,
    PREFERENCES,
    SOURCES,
    provisioning_directories,
    provisioning_files,
)
from tests.e2e.conftest import write_inventory
from tests.e2e.test_monitoring import SERVING, wait_for
from tests.unit.test_dashboards import BOARDS, Query, all_queries, concrete, metric_names

pytestmark = pytest.mark.e2e

GATEWAY = 8000
# Panels the testbed cannot fill: every metric they read starts with one of these.
NO_DATA_HERE = {
    "DCGM_": "tb2 has no GPU: its GPU exporter says so (llmhost_gpu_up 0) and has no DCGM_*",
    "vllm:": "the testbed serves with llama.cpp (vLLM runs on GPU classes)",
    "llmhost_eval_": "rt-one has no eval set, so no production eval runs for it",
    "llmhost_gate_eval_score": "the testbed's models have no eval set: no gate records a score",
    "node_filesystem_": "a testbed host's root is an overlay, which node exporter leaves out",
}
SCRAPE_INTERVAL_S = 15  # monitoring_scrape_interval_s's default, which the testbed keeps
MIRROR_PORT = 8079
# A price table on the monitoring host, so the cost panels have data (the tokens of the load).
PRICED = {"monitoring_token_prices": {"prompt": 0.5, "completion": 1.5}}
MIRROR_DIR = "/root/llmhost-e2e-grafana-mirror"
MIRROR_UNIT = "llmhost-e2e-grafana-mirror"


@pytest.fixture(scope="module")
def watched(tmp_path_factory, testbed, hosts, published):
    """Both hosts converged with monitoring (Grafana off: the testbed's data says so)."""
    path = write_inventory(
        tmp_path_factory.mktemp("grafana") / "inventory.py",
        testbed,
        hosts,
        **{hosts[0].name: PRICED, hosts[1].name: SERVING},
    )
    first = converge.run(path)
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    return path


# -- the queries, against the live Prometheus -----------------------------------------------

EVALUATE = """
import json, sys, urllib.error, urllib.parse, urllib.request
results = []
for expr in json.load(open(sys.argv[1])):
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=20))
    except urllib.error.HTTPError as error:
        answer = json.loads(error.read() or b"{}") or {"status": "error", "error": str(error)}
    results.append(answer)
print(json.dumps(results))
"""


def evaluate(testbed, monitor, expressions: list[str]) -> list[dict[str, Any]]:
    """Prometheus's answer to each expression, asked on the monitoring host in one call."""
    testbed.put(monitor, "/root/llmhost-e2e-queries.json", json.dumps(expressions), "0600")
    out = testbed.ssh(monitor, f"python3 -c {shlex.quote(EVALUATE)} /root/llmhost-e2e-queries.json")
    return json.loads(out)


def request(testbed, host, key: str | None, stream: bool) -> int:
    context = ssl.create_default_context(cafile=str(testbed.root / "secrets" / "ca" / "ca.crt"))
    connection = http.client.HTTPSConnection(host.address, GATEWAY, context=context, timeout=60)
    body = json.dumps({"prompt": "Hello", "max_tokens": 8, "temperature": 0, "stream": stream})
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", "/v1/completions", body.encode(), headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


@pytest.fixture(scope="module")
def loaded(testbed, hosts, watched):
    """A short load through tb2's gateway (and a few requests without a key), scraped.

    In two halves with a scrape between them: a counter that a first request creates has
    no earlier sample, so rate() and increase() over it only see what comes after the
    scrape that first saw it.
    """
    monitor, serving = hosts
    key = api_keys(testbed.root / "secrets")["tests"]

    def load(requests: int) -> list[int]:
        statuses = [request(testbed, serving, key, stream=i % 2 == 0) for i in range(requests)]
        return statuses + [request(testbed, serving, None, stream=False) for _ in range(2)]

    def seen(expressions: list[str]) -> bool:
        return all(answer["data"]["result"] for answer in evaluate(testbed, monitor, expressions))

    host = f'host="{serving.name}"'
    statuses = load(8)
    wait_for(
        lambda: seen(
            [
                f"llmhost_gateway_requests_total{{{host}}}",
                f"llamacpp:tokens_predicted_total{{{host}}}",
            ]
        ),
        120,
        "the first half of the load in Prometheus",
    )
    time.sleep(SCRAPE_INTERVAL_S + 1)  # the next scrape has the counters before the second half
    statuses += load(16)
    assert statuses.count(200) >= 10 and statuses.count(401) == 4, statuses
    wait_for(
        lambda: seen(
            [
                f"sum(increase(llmhost_gateway_requests_total{{{host}}}[5m])) > 0",
                f"sum(increase(llamacpp:tokens_predicted_total{{{host}}}[5m])) > 0",
            ]
        ),
        120,
        "the load in Prometheus (two scrapes of the gateway and the engine)",
    )
    return statuses


def excused(names: set[str], present: set[str]) -> str | None:
    """Why a panel reading ``names`` may be empty on the testbed; None when it may not."""
    reasons = set()
    for name in names:
        reason = next((r for prefix, r in NO_DATA_HERE.items() if name.startswith(prefix)), None)
        if reason is None:
            return None
        reasons.add(reason)
    return "; ".join(sorted(reasons))


def test_every_dashboard_query_evaluates_and_every_panel_has_data(testbed, hosts, loaded):
    monitor, _ = hosts
    queries: list[Query] = all_queries()
    answers = evaluate(testbed, monitor, [concrete(q) for q in queries])
    failed = [
        f"{q.board}: {q.where}: {a.get('error')}\n  {concrete(q)}"
        for q, a in zip(queries, answers, strict=True)
        if a.get("status") != "success"
    ]
    assert not failed, "Prometheus refused these queries:\n" + "\n".join(failed)

    counted = evaluate(testbed, monitor, ['count by (__name__) ({__name__=~"llmhost_.+"})'])
    present = {result["metric"]["__name__"] for result in counted[0]["data"]["result"]}
    panels: dict[tuple[str, int], dict[str, Any]] = {}
    for query, answer in zip(queries, answers, strict=True):
        if query.panel is None:
            continue
        entry = panels.setdefault(
            (query.board, query.panel["id"]),
            {"title": query.panel["title"], "data": False, "names": set()},
        )
        entry["data"] |= bool(answer["data"]["result"])
        entry["names"] |= metric_names(concrete(query))
    empty = [
        f"{board}: panel {number} {entry['title']!r} ({', '.join(sorted(entry['names']))})"
        for (board, number), entry in panels.items()
        if not entry["data"] and excused(entry["names"], present) is None
    ]
    assert not empty, "these panels show nothing after the load:\n" + "\n".join(empty)
    assert len(panels) == sum(len(board["panels"]) for board in BOARDS.values())


def test_every_variable_of_the_dashboards_has_values(testbed, hosts, loaded):
    monitor, serving = hosts
    variables = [q for q in all_queries() if q.where.startswith("variable ")]
    answers = evaluate(testbed, monitor, [concrete(q) for q in variables])
    for query, answer in zip(variables, answers, strict=True):
        assert answer["data"]["result"], f"{query.board}: {query.where} lists nothing"
    hosts_listed = {r["metric"]["host"] for r in answers[0]["data"]["result"]}
    assert {monitor.name, serving.name} <= hosts_listed


# -- Grafana's repository key, checked on tb1 ------------------------------------------------


@pytest.fixture(scope="module")
def impostor(tmp_path_factory, testbed, hosts, watched):
    """A key server on tb1's loopback whose gpg.key holds a key made here, not Grafana's."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is needed on this machine to make the impostor key (Debian: gpg)")
    monitor = hosts[0]
    home = tmp_path_factory.mktemp("impostor") / "gnupg"
    home.mkdir(mode=0o700)

    def gpg(*arguments: str) -> str:
        return subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--passphrase", "", *arguments],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    gpg("--quick-gen-key", "Not Grafana <impostor@example.invalid>", "ed25519", "sign", "never")
    fingerprint = next(
        line.split(":")[9]
        for line in gpg("--with-colons", "--list-keys").splitlines()
        if line.startswith("fpr:")
    )
    exported = gpg("--armor", "--export")
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    testbed.ssh(
        monitor, f"systemctl stop {MIRROR_UNIT} 2>/dev/null; install -d -m 0755 {MIRROR_DIR}"
    )
    testbed.put(monitor, f"{MIRROR_DIR}/gpg.key", exported, mode="0644")
    testbed.ssh(
        monitor,
        f"systemd-run --unit {MIRROR_UNIT} --collect python3 -m http.server {MIRROR_PORT} "
        f"--bind 127.0.0.1 --directory {MIRROR_DIR} >/dev/null && "
        f"for _ in $(seq 50); do ss -ltnH 'sport = :{MIRROR_PORT}' | grep -q . && exit 0; "
        "sleep 0.2; done; exit 1",
    )
    try:
        yield f"http://localhost:{MIRROR_PORT}", fingerprint
    finally:
        testbed.ssh(monitor, f"systemctl stop {MIRROR_UNIT}; rm -rf {MIRROR_DIR}", check=False)


def apt_trust(testbed, host) -> str:
    """What APT trusts and reads on the host: its keyrings and sources, with their digests."""
    return testbed.ssh(
        host,
        "find /etc/apt/trusted.gpg /etc/apt/trusted.gpg.d /etc/apt/keyrings /usr/share/keyrings "
        "/etc/apt/sources.list /etc/apt/sources.list.d -type f 2>/dev/null | sort "
        "| xargs -r sha256sum",
    )


@pytest.fixture(scope="module")
def refused(tmp_path_factory, testbed, hosts, impostor):
    """tb1 converged with Grafana on and the impostor mirror: the run that must fail."""
    monitor = hosts[0]
    url, _ = impostor
    before = apt_trust(testbed, monitor)
    path = write_inventory(
        tmp_path_factory.mktemp("refused") / "inventory.py",
        testbed,
        hosts,
        **{
            monitor.name: {
                **PRICED,
                "monitoring_grafana": True,
                "monitoring_grafana_apt_mirror": url,
            },
            hosts[1].name: SERVING,  # tb2 keeps serving: tb1 keeps scraping its gateway
        },
    )
    result = converge.run(path, limit=(monitor.name,))
    return {"result": result, "before": before, "inventory": path}


def test_a_key_that_is_not_grafanas_is_refused_and_nothing_is_trusted(
    testbed, hosts, impostor, refused
):
    monitor = hosts[0]
    _, fingerprint = impostor
    result = refused["result"]
    assert result.returncode != 0, "the deploy went on past a key that is not Grafana's"
    stderr = result.stderr
    assert f"does not contain Grafana's signing key {KEY_FINGERPRINT}" in stderr, stderr[-3000:]
    assert f"(it has: {fingerprint})" in stderr and "nothing was trusted" in stderr
    left = testbed.ssh(
        monitor,
        f"for f in {KEYRING} {KEYRING}.new {SOURCES} {PREFERENCES} /tmp/llmhost-apt-key.*; do "
        'test -e "$f" && echo "$f"; done; true',
    )
    assert left.strip() == "", f"left on the host: {left}"
    assert apt_trust(testbed, monitor) == refused["before"], "APT trusts or reads something new"
    status = testbed.ssh(monitor, "dpkg-query -W -f='${Status}' grafana 2>&1; true")
    assert "install ok installed" not in status
    served = testbed.ssh(monitor, f"journalctl -u {MIRROR_UNIT} --no-pager -o cat")
    assert "GET /gpg.key" in served, "the key came from monitoring_grafana_apt_mirror"


def test_the_provisioning_files_are_on_the_host_with_owner_mode_and_content(
    testbed, hosts, refused
):
    monitor = hosts[0]
    data = {**testbed.inventory_data(monitor), "monitoring_grafana": True}
    wanted = provisioning_files(from_data(MonitoringSettings, data, monitor.name))
    assert any(item.path.startswith(DASHBOARDS) for item in wanted)
    paths = [item.path for item in wanted]
    quoted = " ".join(shlex.quote(p) for p in [*provisioning_directories(), *paths])
    stats = testbed.ssh(monitor, f"stat -c '%n %U:%G %a' {quoted}").splitlines()
    owners = {path: f"{owner} {mode}" for path, owner, mode in (s.rsplit(" ", 2) for s in stats)}
    for directory in provisioning_directories():
        assert owners[directory] == "root:root 755", directory
    for path in paths:
        assert owners[path] == "root:root 644", path
    sums = testbed.ssh(monitor, "sha256sum " + " ".join(shlex.quote(p) for p in paths))
    digests = {path: digest for digest, path in (line.split("  ", 1) for line in sums.splitlines())}
    for item in wanted:
        local = hashlib.sha256(item.content.encode()).hexdigest()
        assert digests[item.path] == local, f"{item.path} differs from what the role renders"
    entries = testbed.ssh(monitor, f"ls -1A {DASHBOARDS}").split()
    assert sorted(entries) == sorted(Path(p).name for p in paths if p.startswith(DASHBOARDS))


# -- Grafana installed: only where its repository can be reached -----------------------------


def test_grafana_installs_from_its_repository_and_serves_the_dashboards(
    tmp_path, testbed, hosts, watched
):
    if "apt.grafana.com" not in EGRESS_ALLOWED:
        pytest.skip(
            "the testbed has no route to apt.grafana.com: its egress proxy forwards only to "
            f"{', '.join(EGRESS_ALLOWED)} (llmhost.testing.testbed EGRESS_ALLOWED), so "
            "Grafana's package cannot be installed here; tests/unit/test_grafana.py plans the "
            "install, and the key check above runs on the host"
        )
    monitor = hosts[0]
    path = write_inventory(
        tmp_path / "inventory.py",
        testbed,
        hosts,
        **{monitor.name: {**PRICED, "monitoring_grafana": True}, hosts[1].name: SERVING},
    )
    first = converge.run(path, limit=(monitor.name,))
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    second = converge.run(path, limit=(monitor.name,))
    assert second.returncode == 0 and second.changes == 0, second.changed_operations()
    assert testbed.ssh(monitor, f"systemctl is-active {GRAFANA_UNIT}").strip() == "active"
    password = grafana_admin_password(testbed.root / "secrets")
    testbed.put(monitor, "/root/llmhost-e2e-grafana-login", f"admin:{password}", "0600")
    script = (
        "import base64, json, sys, urllib.request\n"
        "login = open('/root/llmhost-e2e-grafana-login').read().encode()\n"
        "auth = base64.b64encode(login).decode()\n"
        "for path in sys.argv[1:]:\n"
        "    request = urllib.request.Request('http://127.0.0.1:3000' + path,\n"
        "                                     headers={'Authorization': 'Basic ' + auth})\n"
        "    print(json.dumps(json.load(urllib.request.urlopen(request, timeout=20))))\n"
    )
    uids = [board["uid"] for board in BOARDS.values()]
    paths = ["/api/datasources/uid/llmhost-prometheus", *(f"/api/dashboards/uid/{u}" for u in uids)]
    try:
        answers = testbed.ssh(monitor, f"python3 -c {shlex.quote(script)} {' '.join(paths)}")
    finally:
        testbed.ssh(monitor, "rm -f /root/llmhost-e2e-grafana-login", check=False)
    datasource, *dashboards = (json.loads(line) for line in answers.splitlines())
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://127.0.0.1:9090"
    assert [d["dashboard"]["uid"] for d in dashboards] == uids
