"""The gateway on a real host: nginx with keys, limits and an audit log in front of real
llama-server colours, and blue-green cutover and rollback under steady streaming load.

Clients run on this machine and reach tb1's gateway over HTTPS (its certificate from the
llmhost CA), as an application in the same network would.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmhost import converge
from llmhost.onhost.layout import STATE_FILE
from llmhost.secrets import add_api_key, api_keys
from roles.gateway.defaults import AUDIT_LOG
from roles.runtime.defaults import unit_name
from tests.e2e.conftest import cli, write_inventory

pytestmark = pytest.mark.e2e

GATEWAY = 8000
# Generous limits for the load tests; the limit test sets its own.
LOAD_LIMITS = {"gateway_rate_limit_rps": 2000, "gateway_rate_limit_burst": 2000}


@pytest.fixture(scope="module")
def keys(testbed, published) -> dict[str, str]:
    secrets = testbed.root / "secrets"
    if "team-b" not in api_keys(secrets):
        add_api_key(secrets, "team-b")
    return api_keys(secrets)


def inventory(tmp_path: Path, testbed, hosts, **data) -> str:
    """tb1 serves (it is also the primary registry); tb2 is left to the runtime tests."""
    host = hosts[0]
    return write_inventory(tmp_path / "inventory.py", testbed, hosts, **{host.name: data})


@pytest.fixture(scope="module")
def gateway_host(testbed, hosts, keys, tmp_path_factory):
    """tb1 serving rt-one through the gateway (blue active), with load-test limits."""
    path = inventory(
        tmp_path_factory.mktemp("gw"), testbed, hosts, model_name="rt-one", **LOAD_LIMITS
    )
    result = converge.run(path)
    assert result.returncode == 0 and result.errors == 0, result.stderr[-4000:]
    return hosts[0]


def tls_context(testbed) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(testbed.root / "secrets" / "ca" / "ca.crt"))


def request(testbed, host, key: str | None, body: bytes, stream: bool = False):
    connection = http.client.HTTPSConnection(
        host.address, GATEWAY, context=tls_context(testbed), timeout=60
    )
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", "/v1/completions", body, headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data, response.getheader("X-Request-Id")


def completion_body(max_tokens: int = 4, stream: bool = False) -> bytes:
    return json.dumps(
        {"prompt": "Hello", "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    ).encode()


def test_keys_limits_and_sizes_give_the_right_status(tmp_path, testbed, hosts, keys, gateway_host):
    host = gateway_host
    assert request(testbed, host, None, completion_body())[0] == 401
    assert request(testbed, host, "x" * 43, completion_body())[0] == 401
    status, data, request_id = request(testbed, host, keys["tests"], completion_body())
    assert status == 200, data
    assert json.loads(data)["choices"] and request_id
    oversized = b'{"prompt": "' + b"a" * (1100 * 1024) + b'"}'
    assert request(testbed, host, keys["tests"], oversized)[0] == 413
    health = http.client.HTTPSConnection(host.address, GATEWAY, context=tls_context(testbed))
    health.request("GET", "/healthz")
    assert health.getresponse().status == 200, "load balancers need no key"

    strict = inventory(
        tmp_path,
        testbed,
        hosts,
        model_name="rt-one",
        gateway_rate_limit_rps=1,
        gateway_rate_limit_burst=1,
    )
    assert converge.run(strict).returncode == 0
    try:
        statuses = [request(testbed, host, keys["team-b"], completion_body(1))[0] for _ in range(8)]
        assert 429 in statuses and 200 in statuses, statuses
    finally:
        relaxed = inventory(tmp_path, testbed, hosts, model_name="rt-one", **LOAD_LIMITS)
        assert converge.run(relaxed).returncode == 0


def test_audit_lines_are_json_with_identity_and_colour_and_no_key_appears_anywhere(
    tmp_path, testbed, hosts, keys, gateway_host
):
    host = gateway_host
    status, _, request_id = request(testbed, host, keys["team-b"], completion_body())
    assert status == 200
    lines = [json.loads(line) for line in testbed.ssh(host, f"cat {AUDIT_LOG}").splitlines()]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert len(mine) == 1
    assert mine[0]["identity"] == "team-b" and mine[0]["colour"] in ("blue", "green")
    assert mine[0]["status"] == 200 and float(mine[0]["request_time"]) >= 0
    assert any(line["status"] == 401 and line["identity"] == "" for line in lines)
    again = converge.run(inventory(tmp_path, testbed, hosts, model_name="rt-one", **LOAD_LIMITS))
    logs = "cat /var/log/*.log /var/log/nginx/* 2>/dev/null; journalctl --no-pager -o cat"
    everything = testbed.ssh(host, logs, check=False) + again.stdout + again.stderr
    for identity, key in keys.items():
        assert key not in everything, f"{identity}'s key appears in a log or the deploy output"
    assert "Hello" not in testbed.ssh(host, f"cat {AUDIT_LOG}"), "prompts are not logged"


def audit_line(testbed, host, request_id: str) -> dict:
    lines = [json.loads(line) for line in testbed.ssh(host, f"cat {AUDIT_LOG}").splitlines()]
    (mine,) = [line for line in lines if line["request_id"] == request_id]
    return mine


def streamed_usage(data: bytes) -> dict | None:
    events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    found = [json.loads(e).get("usage") for e in events if e.strip() != "[DONE]"]
    return next((u for u in reversed(found) if u), None)


def test_the_audit_line_has_the_tokens_the_engine_reported_and_the_exporter_counts_them(
    testbed, hosts, keys, gateway_host
):
    host = gateway_host
    status, data, request_id = request(testbed, host, keys["team-b"], completion_body(5))
    assert status == 200
    usage = json.loads(data)["usage"]
    line = audit_line(testbed, host, request_id)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        str(usage["prompt_tokens"]),
        str(usage["completion_tokens"]),
    )
    # A stream that asks for usage gets it in its last event, and the gateway reads it there.
    asked = json.loads(completion_body(6, stream=True))
    asked["stream_options"] = {"include_usage": True}
    status, data, request_id = request(testbed, host, keys["team-b"], json.dumps(asked).encode())
    assert status == 200
    usage = streamed_usage(data)
    line = audit_line(testbed, host, request_id)
    if usage is None:
        assert (line["prompt_tokens"], line["completion_tokens"]) == ("", "")
    else:
        assert line["completion_tokens"] == str(usage["completion_tokens"])
    # Not an answer: nothing counted.
    status, _, request_id = request(testbed, host, None, completion_body())
    assert status == 401 and audit_line(testbed, host, request_id)["prompt_tokens"] == ""
    time.sleep(1.5)  # the exporter polls the log every 0.5 s
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9114/metrics').read().decode())"
    metrics = testbed.ssh(host, f'python3 -c "{fetch}"')
    assert 'llmhost_gateway_tokens_total{identity="team-b",colour=' in metrics
    assert "llmhost_gateway_answers_without_usage_total{" in metrics


def test_engine_and_gateway_logs_are_json_lines_in_the_journal(testbed, hosts, keys, gateway_host):
    host = gateway_host
    status, _, request_id = request(testbed, host, keys["tests"], completion_body())
    assert status == 200
    time.sleep(1)
    journal = testbed.ssh(host, "journalctl -t llmhost_gateway -o cat --no-pager -n 200")
    audited = [json.loads(line) for line in journal.splitlines() if line.startswith("{")]
    assert any(entry["request_id"] == request_id for entry in audited), journal[-2000:]
    active = state(testbed, host)["active"]
    engine = testbed.ssh(
        host, f"journalctl -u {unit_name(active)} -o json --no-pager -n 50", check=False
    )
    records = [json.loads(line) for line in engine.splitlines() if line.strip()]
    from_engine = [r for r in records if r.get("SYSLOG_IDENTIFIER") == f"llmhost-runtime-{active}"]
    assert from_engine, engine[-2000:]
    assert all(r.get("LLMHOST_COLOUR") == active for r in from_engine)
    messages = [r["MESSAGE"] for r in from_engine if isinstance(r.get("MESSAGE"), str)]
    assert messages and all(json.loads(m) for m in messages if m.startswith("{"))
    assert sum(m.startswith("{") for m in messages) >= len(messages) // 2, messages[-5:]


def test_the_second_run_changes_nothing(tmp_path, testbed, hosts, gateway_host):
    again = converge.run(inventory(tmp_path, testbed, hosts, model_name="rt-one", **LOAD_LIMITS))
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()


@dataclass
class Load:
    """Streaming clients in threads, each request on a new connection, until stopped.

    Each goes to ``host``'s gateway, or through ``send`` (() -> (status, body)) when given.
    """

    testbed: object
    host: object
    key: str
    clients: int = 20
    send: Callable[[], tuple[int, bytes]] | None = None
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    colours: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self) -> None:
        try:
            if self.send is not None:
                status, data = self.send()
            else:
                status, data, _ = request(
                    self.testbed, self.host, self.key, completion_body(8, stream=True)
                )
            good = status == 200 and data.rstrip().endswith(b"data: [DONE]")
            problem = f"{status}: {data[-200:]!r}"
        except Exception as error:  # a client thread that died would hang wait_for
            good, problem = False, repr(error)
        with self.lock:
            if good:
                self.ok += 1
            else:
                self.failed.append(problem)

    def run(self) -> None:
        while not self.stop.is_set():
            self.one()

    def __enter__(self) -> Load:
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


def state(testbed, host) -> dict:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def test_cutover_and_rollback_under_streaming_load_fail_no_request(
    tmp_path, testbed, hosts, keys, gateway_host
):
    host = gateway_host
    before = state(testbed, host)["active"]
    path = inventory(tmp_path, testbed, hosts, model_name="rt-two", **LOAD_LIMITS)
    with Load(testbed, host, keys["tests"]) as load:
        load.wait_for(300)
        deployed = converge.run(path)  # pull, stage the idle colour, cut over
        after_cutover = load.ok + len(load.failed)
        rolled = cli("rollback", path, host.name)
        load.wait_for(3000)
    total = load.ok + len(load.failed)
    # A request nginx sent again (a pooled engine connection was dead) logs two upstream statuses.
    retried = testbed.ssh(host, f"grep -c 'upstream_status\":\"[0-9]*, ' {AUDIT_LOG}", check=False)
    print(
        f"under 20 streaming clients: {total} requests, {load.ok} ok, {len(load.failed)} "
        f"failed (cutover done at {after_cutover}); sent again on a new engine connection: "
        f"{retried.strip() or 0} (whole audit log)"
    )
    assert deployed.returncode == 0 and deployed.errors == 0, deployed.stderr[-4000:]
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    if load.failed:
        print(testbed.ssh(host, "tail -n 30 /var/log/nginx/error.log", check=False))
        print(
            testbed.ssh(
                host,
                f"cat {STATE_FILE}; journalctl -u 'llmhost-runtime@*' -n 60 --no-pager",
                check=False,
            )
        )
    assert load.failed == [], load.failed[:3]
    assert total >= 3000
    recorded = state(testbed, host)
    assert recorded["active"] == before, "rollback returned to the colour that served before"
    events = [e["event"] for e in recorded["history"]]
    assert events[-2:] == ["cutover", "rollback"]
    other = "green" if before == "blue" else "blue"
    assert testbed.ssh(host, f"systemctl is-active {unit_name(other)}").strip() == "active", (
        "the colour rolled back from stays warm"
    )


def test_a_cold_previous_colour_is_started_before_the_rollback_switches(
    tmp_path, testbed, hosts, keys, gateway_host
):
    host = gateway_host
    recorded = state(testbed, host)
    active, previous = recorded["active"], "green" if recorded["active"] == "blue" else "blue"
    testbed.ssh(host, f"systemctl stop {unit_name(previous)}")
    path = inventory(tmp_path, testbed, hosts, model_name="rt-one", **LOAD_LIMITS)
    rolled = cli("rollback", path, host.name)
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert state(testbed, host)["active"] == previous
    assert request(testbed, host, keys["tests"], completion_body())[0] == 200
    status = cli("status", path)
    assert status.returncode == 0, status.stderr
    assert f"{host.name}: active {previous} (gateway -> {previous})" in status.stdout
    assert active in status.stdout


def test_a_colour_that_fails_readiness_is_never_switched_to(
    tmp_path, testbed, hosts, keys, gateway_host
):
    host = gateway_host
    before = state(testbed, host)
    upstream = testbed.ssh(host, "cat /etc/nginx/llmhost/upstream.conf")
    broken = inventory(
        tmp_path,
        testbed,
        hosts,
        model_name="rt-one",
        runtime_extra_args=["--no-such-option"],
        runtime_ready_timeout_s=15,
        **LOAD_LIMITS,
    )
    result = converge.run(broken)
    assert result.returncode != 0
    assert "is not ready" in result.stderr, result.stderr[-3000:]
    staged = "green" if before["active"] == "blue" else "blue"
    assert testbed.ssh(host, f"systemctl is-active {unit_name(staged)}", check=False).strip() in (
        "inactive",
        "failed",
    ), "a colour that never became ready is stopped, not left crash-looping"
    assert testbed.ssh(host, "cat /etc/nginx/llmhost/upstream.conf") == upstream
    assert state(testbed, host)["active"] == before["active"]
    assert request(testbed, host, keys["tests"], completion_body())[0] == 200


def test_a_rollout_stops_at_the_first_failed_batch_and_leaves_the_rest_untouched(
    tmp_path, testbed, hosts, keys, gateway_host
):
    canary, rest = hosts
    before = testbed.ssh(rest, f"cat {STATE_FILE} 2>/dev/null || echo none", check=False)
    # Valid data (the offline check passes), but an engine that cannot start: only the
    # canary's own deploy finds out, and the rollout must stop there.
    edits = {
        canary.name: {
            "model_name": "rt-one",
            "runtime_extra_args": ["--no-such-option"],
            "runtime_ready_timeout_s": 15,
        },
        rest.name: {"model_name": "rt-one"},
    }
    path = write_inventory(tmp_path / "inventory.py", testbed, hosts, **edits)
    rolled = cli("deploy", path, "--batch-size", "1", "-y")
    # The canary's broken colour stays failed (never active); clear it for the tests after.
    testbed.ssh(canary, "systemctl reset-failed 'llmhost-runtime@*'", check=False)
    assert rolled.returncode == 1, rolled.stderr[-3000:]
    assert f"batch 1 failed; rollout stopped. Not touched: {rest.name}" in rolled.stderr
    assert "is not ready" in rolled.stderr, rolled.stderr[-6000:]
    after = testbed.ssh(rest, f"cat {STATE_FILE} 2>/dev/null || echo none", check=False)
    assert after == before
