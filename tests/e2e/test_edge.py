"""The edge on real hosts: HAProxy on tb3 in front of tb1's and tb2's gateways.

Clients on this machine reach the edge over HTTPS (its certificate from the llmhost CA).
The module converges the three, then rolls a new release out to both serving hosts under
steady streaming load through the edge: each host leaves the edge's pool for its switch
and rejoins before the next one's, and no request fails. It leaves tb3 blank again for
the fleet, which takes it as a serving twin (it runs before the fleet: conftest's
RUN_LAST).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import secrets as secrets_module
import shlex
import time

import pytest

from llmhost import converge
from llmhost.secrets import add_api_key, api_keys, certificate_authority
from llmhost.testing.hostedapi import ANSWER, HostedApi
from llmhost.testing.oidc import Issuer
from llmhost.testing.testbed import Testbed, TestbedHost
from roles.edge.defaults import ADMIN_SOCKET, AUDIT_TAG, CANARY_MAP, CONFIG, EdgeSettings
from tests.e2e.conftest import cli, connect_testinfra, publish
from tests.e2e.test_gateway import LOAD_LIMITS, Load, completion_body, state, tls_context

pytestmark = pytest.mark.e2e

EDGE_PORT = EdgeSettings().edge_port
SERVING = ("tb1", "tb2")
ALL_UP = {"tb1": "2", "tb2": "2", "fallback-fra": "2"}  # HAProxy's operational state 2: up


HOSTED_PORT = 9443  # the hosted API's stand-in, on this machine
HOSTED_KEY_FILE = "hosted-api-key"
SECOND_REGION = "de-testbed"
TOKEN_QUOTA = 60  # team c's tokens an hour: a few answers
QUICK_S = 5  # the monitoring host's scrape interval and the edges' quota passes
SSO_ISSUER = "https://login.testbed.example/realms/llm"
SSO_AUDIENCE = "llmhost-testbed"
SSO_KEY, SSO_JWKS = "sso-issuer.key", "sso-jwks.json"  # in the testbed's secrets directory


def edge_inventory(
    path,
    testbed: Testbed,
    hosts: list[TestbedHost],
    model: str,
    serving_extra: dict | None = None,
    edge_extra: dict | None = None,
) -> str:
    """tb1 and tb2 serve ``model`` (tb1 is also the registry and monitoring host) behind
    tb3, the edge; tb4 is a second cluster in another region, its own edge in front of its
    own gateway. tb3 falls back to tb4's edge, then to the hosted API (a stand-in on this
    machine) for the `tests` identity alone. The extras are added to tb1's and tb2's data,
    and to tb3's."""
    tb3, tb4 = hosts[2:]
    secrets = testbed.root / "secrets"
    # Identities and features are the organisation's, the same on every edge (in a real
    # inventory: group_data/all.py); what differs is each edge's pool and tiers.
    policy = {
        "edge_identities": {
            "tests": {"team": "research", "hosted_fallback": True},
            "team-b": {"team": "b"},
            "team-c": {"team": "c"},
        },
        "edge_features": ["chat", "summarise"],
        "edge_teams": {"b": {"requests_per_minute": 4}, "c": {"tokens_per_hour": TOKEN_QUOTA}},
        "edge_token_quota_interval_s": QUICK_S,
        "edge_oidc": {
            "issuer": SSO_ISSUER,
            "audience": SSO_AUDIENCE,
            "jwks_file": str(secrets / SSO_JWKS),
            "gateway_identity": "sso",
            "team_claim": "team",
        },
    }
    edge = {
        **policy,
        "edge_serving_group": "serving",
        "edge_fallback_clusters": [
            {"name": "fra", "address": f"{tb4.address}:{EDGE_PORT}", "region": SECOND_REGION}
        ],
        "edge_hosted_fallback": {
            "url": f"https://{tb3.gateway}:{HOSTED_PORT}/v1",
            "key_file": HOSTED_KEY_FILE,
            "region": "gb-testbed",
            "ca_file": str(secrets / "ca" / "ca.crt"),
        },
    }
    serving = {"model_name": model, **LOAD_LIMITS, **(serving_extra or {})}
    data = {
        # The monitoring host scrapes every 5 s and the edges ask it every 5 s: team c's
        # token quota holds it within seconds, not half a minute.
        "tb1": {**serving, "monitoring_scrape_interval_s": QUICK_S},
        "tb2": serving,
        "tb3": {**edge, **(edge_extra or {})},
        "tb4": {**serving, **policy, "region": SECOND_REGION, "edge_serving_group": "cluster2"},
    }
    entries = [(h.name, {**testbed.inventory_data(h), **data[h.name]}) for h in hosts]
    path.write_text(
        f"testbed = {entries!r}\nregistry = testbed[:2]\nmonitoring = testbed[:1]\n"
        "serving = testbed[:2]\nedge = testbed[2:]\ncluster2 = testbed[3:]\n"
    )
    return str(path)


@pytest.fixture(scope="module")
def edge_hosts(testbed, published, tmp_path_factory):
    """The four converged: tb1 and tb2 serving rt-one behind tb3, and tb4 (serving, its own
    edge) as the second cluster; then tb3 blank again and tb4 gone."""
    publish(testbed)  # earlier modules bring hosts back blank: tb1's registry again first
    secrets = testbed.root / "secrets"
    for identity in ("team-b", "team-c", "sso"):
        if identity not in api_keys(secrets):
            add_api_key(secrets, identity)
    (secrets / SSO_JWKS).write_text(sso_issuer(testbed).jwks())
    key_file = secrets / HOSTED_KEY_FILE
    if not key_file.exists():
        key_file.write_text(secrets_module.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    hosts = testbed.up(4)
    path = edge_inventory(
        tmp_path_factory.mktemp("edge") / "inventory.py", testbed, hosts, "rt-one"
    )
    first = converge.run(path)
    edge_lines = "\n".join(line for line in first.stderr.splitlines() if "tb3" in line)
    assert first.returncode == 0 and first.errors == 0, edge_lines[-3000:] + first.stderr[-3000:]
    try:
        yield hosts, path
    finally:
        testbed.up(3)  # tb4 gone
        testbed.recreate("tb3")


def sso_issuer(testbed) -> Issuer:
    return Issuer.kept_in(testbed.root / "secrets" / SSO_KEY, SSO_ISSUER, SSO_AUDIENCE)


def through_edge(
    testbed,
    edge: TestbedHost,
    key: str | None,
    body: bytes,
    feature: str | None = None,
    path: str = "/v1/completions",
):
    status, data, _ = through_edge_with_id(testbed, edge, key, body, feature, path)
    return status, data


def through_edge_with_id(testbed, edge, key, body, feature=None, path="/v1/completions"):
    """(status, body, the edge's request id as the gateway or the audit line names it)."""
    connection = http.client.HTTPSConnection(
        edge.address, EDGE_PORT, context=tls_context(testbed), timeout=60
    )
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if feature is not None:
        headers["X-Llmhost-Feature"] = feature
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data, response.getheader("X-Llmhost-Edge-Request")


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
    assert servers_state(testbed, edge) == ALL_UP
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
    quota = edge.service("llmhost-edge-quota.timer")
    assert quota.is_running and quota.is_enabled, "team c has a token quota: its timer runs"
    shown = edge.run("systemctl show llmhost-edge-quota.service -p IPAddressDeny").stdout
    assert shown.startswith("IPAddressDeny=") and shown.strip() != "IPAddressDeny=", shown


def fetch(url: str) -> str:
    """A command that prints ``url``'s body (the hosts have python3, not curl)."""
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read().decode())"
    )
    return f"python3 -c {shlex.quote(code)}"


def pool_changes(testbed, edge: TestbedHost, since: str) -> list[tuple[str, str]]:
    """(server, "DOWN" or "UP") in the order HAProxy logged them since ``since``.

    HAProxy reports each change on its stderr and to syslog, so the journal has it twice.
    """
    log = testbed.ssh(edge, f"journalctl -u haproxy --since '{since}' -o cat --no-pager")
    found = re.findall(r"Server llmhost_serving/([\w-]+) is (DOWN|UP)", log)
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
    streamed = completion_body(8, stream=True)
    send = lambda: through_edge(testbed, edge, key, streamed)  # noqa: E731
    with Load(testbed, edge, key, clients=12, send=send) as load:
        load.wait_for(100)
        deployed = converge.run(path)  # both hosts: pull, stage, gate, then cut over in turn
        load.wait_for(load.ok + len(load.failed) + 100)
    total = load.ok + len(load.failed)
    changes = [c for c in pool_changes(testbed, edge, since) if c[0] in SERVING]
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
    assert servers_state(testbed, edge) == ALL_UP
    for host in hosts[:2]:
        flag = testbed.ssh(host, "test -e /run/llmhost-gateway-drain && echo left || echo gone")
        assert flag.strip() == "gone"


def audit_lines(testbed, edge: TestbedHost) -> list[dict]:
    text = testbed.ssh(edge, f"journalctl -t {AUDIT_TAG} -o cat --no-pager")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start_gateway(testbed, host: TestbedHost) -> None:
    """nginx started again; its log is printed (and the test fails) if it will not start."""
    started = testbed.ssh(host, "systemctl start nginx && echo started", check=False)
    if "started" not in started:
        print(testbed.ssh(host, "journalctl -u nginx -n 40 --no-pager", check=False))
        print(testbed.ssh(host, "tail -n 20 /var/log/nginx/error.log", check=False))
        testbed.ssh(host, "sleep 2; systemctl start nginx")


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.5)


def test_with_its_cluster_down_the_edge_falls_back_to_the_other_region_then_the_hosted_api(
    testbed, edge_hosts
):
    hosts, _ = edge_hosts
    tb1, tb2, edge, tb4 = hosts
    keys = api_keys(testbed.root / "secrets")
    hosted_key = (testbed.root / "secrets" / HOSTED_KEY_FILE).read_text().strip()
    issued = certificate_authority(testbed.root / "secrets").issue(
        "hosted-stand-in", [edge.gateway]
    )
    cert, key = testbed.root / "hosted.crt", testbed.root / "hosted.key"
    cert.write_text(issued.certificate_pem)
    key.write_text(issued.key_pem)
    key.chmod(0o600)
    answers: dict[str, tuple[int, bytes, str | None]] = {}

    def ask(label: str, identity: str) -> None:
        answers[label] = through_edge_with_id(
            testbed, edge, keys[identity], completion_body(), feature="chat"
        )

    with HostedApi(hosted_key, cert, key, port=HOSTED_PORT) as hosted:
        try:
            ask("local", "tests")
            for host in (tb1, tb2):
                testbed.ssh(host, "systemctl stop nginx")
            wait_until(
                lambda: servers_state(testbed, edge) == {**ALL_UP, "tb1": "0", "tb2": "0"},
                "tb1 and tb2 out of the pool",
            )
            ask("fallback", "team-b")
            testbed.ssh(tb4, "systemctl stop nginx")
            wait_until(
                lambda: servers_state(testbed, edge)["fallback-fra"] == "0",
                "the second cluster out of the pool (its edge's /healthz fails)",
            )
            ask("hosted", "tests")
            ask("refused", "team-b")
        finally:
            for host in (tb1, tb2, tb4):
                start_gateway(testbed, host)
        wait_until(lambda: servers_state(testbed, edge) == ALL_UP, "every tier back")
        seen = list(hosted.seen)

    assert [answers[label][0] for label in ("local", "fallback", "hosted")] == [200] * 3, answers
    assert json.loads(answers["hosted"][1])["choices"][0]["text"] == ANSWER
    status, body, _ = answers["refused"]
    assert status == 503 and b"may not use the hosted fallback" in body, body
    (reached,) = seen
    assert reached.headers["authorization"] == f"Bearer {hosted_key}", (
        "the edge's key, not the client's"
    )
    assert keys["tests"] not in json.dumps(reached.headers)
    (at_tb4,) = [
        line
        for line in audit_lines(testbed, tb4)
        if line["via_request_id"] == answers["fallback"][2]
    ]
    assert (at_tb4["identity"], at_tb4["team"], at_tb4["tier"]) == ("team-b", "b", "local")
    served_by_tb4 = testbed.ssh(tb4, "cat /var/log/nginx/llmhost-audit.log")
    assert at_tb4["request_id"] in served_by_tb4, "tb4's gateway names its edge's request id"

    lines = {line["request_id"]: line for line in audit_lines(testbed, edge)}
    expected = {
        "local": ("tests", "research", "local"),
        "fallback": ("team-b", "b", "fallback:fra"),
        "hosted": ("tests", "research", "hosted"),
        "refused": ("team-b", "b", "edge"),
    }
    for label, (identity, team, tier) in expected.items():
        line = lines[answers[label][2]]
        assert (line["identity"], line["team"], line["tier"], line["feature"]) == (
            identity,
            team,
            tier,
            "chat",
        ), line


def test_a_bad_key_or_an_unknown_feature_is_refused_at_the_edge(testbed, edge_hosts):
    hosts, _ = edge_hosts
    edge = hosts[2]
    key = api_keys(testbed.root / "secrets")["tests"]
    status, body = through_edge(testbed, edge, "not-a-key", completion_body())
    assert status == 401 and b"invalid API key" in body
    status, body = through_edge(testbed, edge, key, completion_body(), feature="poetry")
    assert status == 400 and b"known: chat, summarise" in body
    assert through_edge(testbed, edge, key, completion_body(), feature="summarise")[0] == 200
    health = http.client.HTTPSConnection(
        edge.address, EDGE_PORT, context=tls_context(testbed), timeout=10
    )
    health.request("GET", "/healthz")
    assert health.getresponse().status == 200, "the edge's own health needs no key"


def test_a_team_over_its_request_quota_gets_429_naming_it_and_others_are_not_held_back(
    testbed, edge_hosts
):
    hosts, _ = edge_hosts
    edge = hosts[2]
    keys = api_keys(testbed.root / "secrets")
    answers = [
        through_edge_with_id(testbed, edge, keys["team-b"], completion_body(1)) for _ in range(6)
    ]
    statuses = [status for status, _, _ in answers]
    assert 429 in statuses and statuses.count(200) <= 4, statuses
    refused = next(answer for answer in answers if answer[0] == 429)
    assert json.loads(refused[1])["error"]["message"] == (
        "team b is over its quota of 4 requests a minute"
    )
    assert through_edge(testbed, edge, keys["tests"], completion_body(1))[0] == 200
    lines = {line["request_id"]: line for line in audit_lines(testbed, edge)}
    line = lines[refused[2]]
    assert (line["identity"], line["team"], line["tier"], line["status"]) == (
        "team-b",
        "b",
        "edge",
        429,
    )


def test_a_team_over_its_token_quota_gets_429_naming_it_and_others_are_not_held_back(
    testbed, edge_hosts
):
    hosts, _ = edge_hosts
    edge = hosts[2]
    keys = api_keys(testbed.root / "secrets")
    started = time.monotonic()
    answered = 0
    while time.monotonic() - started < 180:  # two scrapes and a pass, with room
        status, data = through_edge(testbed, edge, keys["team-c"], completion_body(16))
        if status == 429:
            break
        assert status == 200, data
        answered += 1
        time.sleep(0.5)
    held_after = time.monotonic() - started
    print(f"team c: {answered} answers, then held after {held_after:.0f} s")
    assert status == 429, f"team c was never held ({answered} answers)"
    message = json.loads(data)["error"]
    assert message["message"] == f"team c is over its quota of {TOKEN_QUOTA} tokens an hour"
    assert message["team"] == "c"
    assert through_edge(testbed, edge, keys["tests"], completion_body())[0] == 200
    passes = testbed.ssh(edge, "journalctl -u llmhost-edge-quota.service -o cat --no-pager")
    last = [json.loads(line) for line in passes.splitlines() if line.startswith("{")][-1]
    assert last["teams"]["c"]["over"] and last["teams"]["c"]["tokens"] >= TOKEN_QUOTA


def test_an_sso_token_of_the_issuer_is_admitted_as_its_subject_and_team(testbed, edge_hosts):
    hosts, _ = edge_hosts
    tb1, tb2, edge = hosts[:3]
    issuer = sso_issuer(testbed)
    status, data, edge_id = through_edge_with_id(
        testbed, edge, issuer.token(sub="alice@corp.example", team="research"), completion_body()
    )
    assert status == 200, data
    (line,) = [line for line in audit_lines(testbed, edge) if line["request_id"] == edge_id]
    assert (line["identity"], line["team"], line["tier"]) == (
        "sso:alice@corp.example",
        "research",
        "local",
    )
    (served,) = [
        line for host in (tb1, tb2) for line in gateway_lines(testbed, host)
        if line["edge_request_id"] == edge_id
    ]  # fmt: skip
    assert (served["identity"], served["team"]) == ("sso", "research"), (
        "the gateways count SSO requests under the edge's key, by team"
    )
    expired = issuer.token(exp=int(time.time()) - 60)
    assert through_edge(testbed, edge, expired, completion_body())[0] == 401
    stranger = Issuer(SSO_ISSUER, SSO_AUDIENCE)  # same names, another key
    assert through_edge(testbed, edge, stranger.token(), completion_body())[0] == 401
    other_audience = issuer.token(aud="another-service")
    assert through_edge(testbed, edge, other_audience, completion_body())[0] == 401


def gateway_lines(testbed, host: TestbedHost) -> list[dict]:
    text = testbed.ssh(host, "cat /var/log/nginx/llmhost-audit.log")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_gateways_take_team_and_feature_from_the_edge_alone_and_count_tokens_by_them(
    testbed, edge_hosts
):
    hosts, _ = edge_hosts
    tb1, tb2, edge = hosts[:3]
    keys = api_keys(testbed.root / "secrets")
    status, _, edge_id = through_edge_with_id(
        testbed, edge, keys["tests"], completion_body(), feature="summarise"
    )
    assert status == 200
    (line,) = [
        line for host in (tb1, tb2) for line in gateway_lines(testbed, host)
        if line["edge_request_id"] == edge_id
    ]  # fmt: skip
    assert (line["team"], line["feature"]) == ("research", "summarise")
    assert int(line["completion_tokens"]) > 0

    forged = http.client.HTTPSConnection(tb1.address, 8000, context=tls_context(testbed))
    headers = {
        "Authorization": f"Bearer {keys['team-b']}",
        "X-Llmhost-Team": "research",
        "X-Llmhost-Feature": "chat",
    }
    forged.request("POST", "/v1/completions", completion_body(), headers)
    answer = forged.getresponse()
    answer.read()
    direct_id = answer.getheader("X-Request-Id")
    (direct,) = [line for line in gateway_lines(testbed, tb1) if line["request_id"] == direct_id]
    assert (direct["identity"], direct["team"], direct["feature"]) == ("team-b", "", ""), (
        "a client straight to the gateway cannot name a team"
    )
    exported = [testbed.ssh(host, fetch("http://127.0.0.1:9114/metrics")) for host in (tb1, tb2)]
    wanted = 'llmhost_gateway_attributed_tokens_total{identity="tests",team="research"'
    assert any(wanted in metrics for metrics in exported), "the exporter counts by team"


# A release that passes its gate (the soak and the eval ask for completions) and still
# fails real traffic: llama-server without its Jinja templates answers 500 ("tools param
# requires --jinja flag") to every chat request that offers the model tools.
BAD_RELEASE = {"runtime_extra_args": ["--no-jinja"]}
CANARY_RULE = {
    "edge_canary_percent": 30,
    "edge_canary_window_s": 120,
    "edge_canary_min_requests": 10,
}
TOOLS_CHAT = json.dumps(
    {
        "messages": [{"role": "user", "content": "What time is it?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "now",
                    "description": "the time now",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
).encode()


def active_release(testbed, host: TestbedHost) -> str:
    found = state(testbed, host)
    return found["colours"][found["active"]]["id"]


def edge_stat(testbed, edge: TestbedHost) -> dict[tuple[str, str], dict[str, str]]:
    text = testbed.ssh(edge, f"echo 'show stat' | socat stdio {ADMIN_SOCKET}")
    lines = text.strip().splitlines()
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return {(row["pxname"], row["svname"]): row for row in rows}


def test_a_canary_that_answers_500s_is_rolled_back_within_its_window(testbed, edge_hosts, tmp_path):
    hosts, _ = edge_hosts
    tb1, tb2, edge = hosts[:3]
    key = api_keys(testbed.root / "secrets")["tests"]
    before = {host.name: active_release(testbed, host) for host in (tb1, tb2)}
    since = testbed.ssh(edge, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
    path = edge_inventory(
        tmp_path / "inventory.py", testbed, hosts, "rt-two", BAD_RELEASE, CANARY_RULE
    )
    send = lambda: through_edge(testbed, edge, key, TOOLS_CHAT, path="/v1/chat/completions")  # noqa: E731
    with Load(testbed, edge, key, clients=4, send=send) as load:
        load.wait_for(20)
        assert load.failed == [], f"the release before answers tools: {load.failed[:2]}"
        rolled = cli(
            "deploy", path, "--limit", "serving", "--batch-size", "1", "--canary", "1", "-y"
        )
        after_rollback = load.ok
        load.wait_for(load.ok + len(load.failed) + 20)
    print(rolled.stderr[-3000:])
    assert rolled.returncode == 1, rolled.stderr[-4000:]
    assert "canary tb1: 30% of the requests through tb3, judged over 120 s" in rolled.stderr
    assert "canary tb1 rolled back: " in rolled.stderr
    assert "answers were 5xx" in rolled.stderr and "Not touched: tb2" in rolled.stderr

    recorded = state(testbed, tb1)["last_canary"]
    print(f"canary verdict: {recorded}")
    assert recorded["decision"] == "rolled back" and recorded["edges"] == ["tb3"]
    assert recorded["release"] != before["tb1"], "the canary judged the new release"
    assert recorded["elapsed_s"] < CANARY_RULE["edge_canary_window_s"], "within its window"
    assert active_release(testbed, tb1) == before["tb1"], "tb1 switched back"
    assert active_release(testbed, tb2) == before["tb2"], "tb2 was not touched"

    lines = [line for line in audit_lines(testbed, edge) if line["time"] >= since.replace(" ", "T")]
    failed = [line for line in lines if line["status"] >= 500]
    served = {name: sum(1 for line in lines if line["server"] == name) for name in SERVING}
    print(f"through the edge: {len(lines)} requests ({served}), {len(failed)} 5xx")
    assert failed and {line["server"] for line in failed} == {"tb1"}, "the canary alone failed"
    assert all("tools param requires --jinja flag" in problem for problem in load.failed)
    assert load.ok > after_rollback, "requests succeed again after the rollback"
    direct = http.client.HTTPSConnection(tb1.address, 8000, context=tls_context(testbed))
    direct.request("POST", "/v1/chat/completions", TOOLS_CHAT, {"Authorization": f"Bearer {key}"})
    answer = direct.getresponse()
    assert answer.status == 200 and answer.read().rstrip().endswith(b"data: [DONE]"), (
        "tb1's own gateway answers tools again: the release before is back"
    )

    stat = edge_stat(testbed, edge)
    assert stat[("llmhost_serving", "tb1")]["weight"] == "1", "tb1 back at its own weight"
    assert stat[("llmhost_canary", "tb1")]["status"] == "MAINT", "the canary backend closed"
    share = testbed.ssh(edge, f"echo 'show map {CANARY_MAP}' | socat stdio {ADMIN_SOCKET}")
    assert share.split()[-1] == "0"
    assert servers_state(testbed, edge) == ALL_UP

    shown = cli("status", path, "--limit", "tb1")
    assert f"last canary: release {recorded['release']} rolled back: " in shown.stdout, shown.stdout
