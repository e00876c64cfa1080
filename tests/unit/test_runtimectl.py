"""Host-side runtime control against a real local HTTP server standing in for a runtime."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from llmhost.onhost import runtimectl
from llmhost.onhost.layout import MANIFEST_FILE


class FakeRuntime(BaseHTTPRequestHandler):
    health = 200
    completion: ClassVar[dict | None] = {"choices": [{"text": " hi"}]}
    metrics = "llamacpp:requests_processing 0\n"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(type(self).health, b'{"status":"ok"}')
        elif self.path == "/metrics":
            self._send(200, type(self).metrics.encode())
        else:
            self._send(404, b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = type(self).completion
        self._send(200 if body else 500, json.dumps(body or {"error": "boom"}).encode())


@pytest.fixture
def server() -> Iterator[tuple[str, type[FakeRuntime]]]:
    handler = type("Handler", (FakeRuntime,), {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_ready_means_health_and_a_real_completion(server):
    base, handler = server
    runtimectl.probe(base, "m", timeout=2)
    handler.completion = None
    with pytest.raises(runtimectl.NotReady, match="completions answered 500"):
        runtimectl.probe(base, "m", timeout=2)
    handler.completion = {"choices": [{"text": " ok"}]}
    handler.health = 503
    with pytest.raises(runtimectl.NotReady, match="health answered 503"):
        runtimectl.probe(base, "m", timeout=2)


def test_waiting_for_readiness_gives_up_at_the_deadline_with_the_last_reason(server):
    base, handler = server
    handler.health = 503
    with pytest.raises(runtimectl.NotReady, match=r"not ready after 1 s; last: .*503"):
        runtimectl.wait_ready(base, "m", deadline_s=1, interval=0.1)


def test_nothing_listening_is_not_ready():
    with pytest.raises(runtimectl.NotReady):
        runtimectl.probe("http://127.0.0.1:9", "m", timeout=1)


def test_in_flight_requests_are_read_from_either_engines_metrics():
    text = (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "llamacpp:requests_processing 3\n"
        'vllm:num_requests_running{model_name="m"} 2.0\n'
        "llamacpp:requests_deferred 9\n"
    )
    assert runtimectl.requests_in_flight(text) == 5
    assert runtimectl.requests_in_flight("other_metric 1\n") is None


def test_drain_waits_for_in_flight_requests_and_gives_up_at_its_deadline(server):
    base, handler = server
    handler.metrics = "llamacpp:requests_processing 1\n"
    drained, seen = runtimectl.drain(base, deadline_s=0.3, interval=0.1)
    assert not drained and "1 request(s) still in flight" in seen

    def finish() -> None:
        handler.metrics = "llamacpp:requests_processing 0\n"

    threading.Timer(0.3, finish).start()
    drained, seen = runtimectl.drain(base, deadline_s=5, interval=0.1)
    assert drained and seen.startswith("drained after")


def test_drain_of_a_dead_runtime_returns_at_once():
    drained, seen = runtimectl.drain("http://127.0.0.1:9", deadline_s=5)
    assert drained and "nothing to drain" in seen


def test_record_stages_releases_and_never_activates_one(tmp_path: Path):
    path = tmp_path / "state.json"
    args = ["record", "--state", str(path)]
    assert runtimectl.main([*args, "--colour", "blue", "--release", '{"id": "r1"}']) == 0
    assert runtimectl.main([*args, "--colour", "green", "--release", '{"id": "r2"}']) == 0
    state = json.loads(path.read_text())
    assert state["active"] is None, "a first release serves nobody before its gate and cutover"
    assert state["colours"]["blue"]["id"] == "r1" and state["colours"]["green"]["id"] == "r2"
    assert [e["event"] for e in state["history"]] == ["staged", "staged"]
    assert runtimectl.main([*args, "--colour", "green", "--release", "[]"]) == 2


def write_verdict(tmp_path: Path, **verdict) -> str:
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps({"time": "2026-01-01T00:00:00Z", **verdict}))
    return str(path)


def test_a_gate_verdict_is_recorded_for_the_release_the_colour_runs(tmp_path: Path, capsys):
    path = tmp_path / "state.json"
    runtimectl.main(
        ["record", "--state", str(path), "--colour", "green", "--release", '{"id": "r2"}']
    )
    failed = write_verdict(
        tmp_path, release="r2", passed=False, failures=["ttft_p95_ms 900 > 800"],
        report="/var/lib/llmhost/gates/r2/report.html",
    )  # fmt: skip
    record = ["gate-record", "--state", str(path), "--colour", "green", "--verdict"]
    assert runtimectl.main([*record, failed]) == 0
    state = json.loads(path.read_text())
    assert state["last_gate"]["failures"] == ["ttft_p95_ms 900 > 800"]
    assert not runtimectl.gate_passed(state, "green")
    passed, message = runtimectl.check_gate(state, "green", "r2")
    assert not passed and "ttft_p95_ms 900 > 800" in message and "gates/r2/report.html" in message
    assert runtimectl.main([*record, write_verdict(tmp_path, release="r1", passed=True)]) == 2
    assert "the gate judged another release" in capsys.readouterr().err
    assert runtimectl.main([*record, write_verdict(tmp_path, release="r2", passed=True)]) == 0
    state = json.loads(path.read_text())
    assert runtimectl.check_gate(state, "green", "r2")[0]
    assert not runtimectl.check_gate(state, "green", "r3")[0], "another release needs its own"
    restaged = runtimectl.record(state, "green", {"id": "r2"}, "now")
    assert not runtimectl.gate_passed(restaged, "green"), "a restaged colour is gated again"


def test_a_canary_verdict_is_kept_as_the_last_and_in_the_history(tmp_path: Path, capsys):
    path = tmp_path / "state.json"
    runtimectl.main(
        ["record", "--state", str(path), "--colour", "green", "--release", '{"id": "r2"}']
    )
    record = ["canary-record", "--state", str(path), "--verdict"]
    verdict = {"release": "r2", "decision": "rolled back", "reason": "5xx 40% > 1%"}
    assert runtimectl.main([*record, json.dumps({**verdict, "time": "t1"})]) == 0
    state = json.loads(path.read_text())
    assert state["last_canary"]["reason"] == "5xx 40% > 1%"
    assert state["history"][-1] == {"time": "t1", "event": "canary rolled back", "release": "r2"}
    assert state["colours"]["green"]["id"] == "r2", "the rest of the state is kept"
    assert runtimectl.main([*record, json.dumps({**verdict, "decision": "maybe"})]) == 2
    assert "a canary verdict needs a release and a decision" in capsys.readouterr().err
    assert runtimectl.main([*record, "[]"]) == 2
    assert json.loads(path.read_text())["last_canary"]["decision"] == "rolled back"


def gate_scores(state: dict) -> dict[str, float]:
    """The llmhost_gate_eval_score samples of the state's metrics, by release."""
    found = {}
    for line in runtimectl.state_metrics(state).splitlines():
        match = re.fullmatch(r'llmhost_gate_eval_score\{release="([^"]+)"\} (\S+)', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def test_the_active_releases_gated_eval_score_is_exported_after_another_gate(tmp_path: Path):
    """The production eval's alert compares with the active release's own gate score, which
    a later gate of the idle colour (even a failed one) must not take away."""
    path = tmp_path / "state.json"
    record = ["gate-record", "--state", str(path), "--verdict"]
    for colour, release in (("blue", "r1"), ("green", "r2")):
        staged = json.dumps({"id": release})
        runtimectl.main(["record", "--state", str(path), "--colour", colour, "--release", staged])
    verdict = write_verdict(tmp_path, release="r1", passed=True, eval_score=0.75)
    assert runtimectl.main([*record, verdict, "--colour", "blue"]) == 0
    state = json.loads(path.read_text())
    assert state["colours"]["blue"]["gate"] == {
        "passed": True, "time": "2026-01-01T00:00:00Z", "eval_score": 0.75,
    }  # fmt: skip
    assert gate_scores({**state, "active": "blue"}) == {"r1": 0.75}
    verdict = write_verdict(tmp_path, release="r2", passed=False, eval_score=0.5)
    assert runtimectl.main([*record, verdict, "--colour", "green"]) == 0
    state = json.loads(path.read_text())
    assert gate_scores(state) == {"r1": 0.75, "r2": 0.5}


def test_a_state_written_before_colours_kept_their_eval_score_exports_the_last_gates():
    old = {
        "active": "blue",
        "colours": {"blue": {"id": "r1", "gate": {"passed": True, "time": "t"}}},
        "last_gate": {"release": "r1", "passed": True, "eval_score": 0.9},
    }
    assert gate_scores(old) == {"r1": 0.9}
    assert gate_scores({**old, "last_gate": {"release": "r1", "eval_score": None}}) == {}
    assert gate_scores({**old, "last_gate": {"release": "r1", "eval_score": True}}) == {}


def test_the_state_metrics_carry_the_last_gates_eval_score_and_drift():
    """The EvalDrift and GateFailed alerts read these lines from node exporter's textfile."""
    state = {
        "active": "blue",
        "colours": {
            "blue": {"id": "r1", "model": "m", "gate": {"passed": True}},
            "green": {"id": "r2", "model": "m", "gate": {"passed": False}},
        },
        "last_gate": {"release": "r2", "eval_score": 0.75, "drift": 3},
    }
    lines = runtimectl.state_metrics(state).splitlines()
    assert 'llmhost_gate_passed{colour="green",release="r2"} 0' in lines
    assert 'llmhost_gate_eval_score{release="r2"} 0.75' in lines
    assert 'llmhost_gate_eval_drift{release="r2"} 3' in lines
    no_eval = {**state, "last_gate": {"release": "r2", "eval_score": None, "drift": 0}}
    assert "llmhost_gate_eval_drift" not in runtimectl.state_metrics(no_eval)
    odd = {**state, "last_gate": {"release": "r2", "eval_score": 1, "drift": "x"}}
    assert 'llmhost_gate_eval_drift{release="r2"} 0' in runtimectl.state_metrics(odd)


def test_an_ungated_colour_upstream_sends_nowhere():
    text = runtimectl.upstream_text(None, 8001)
    assert "server 127.0.0.1:8001 down;" in text and "default none;" in text
    assert runtimectl.colour_in(text) is None


def test_the_engine_pool_closes_connections_before_llama_server_would():
    """llama-server (cpp-httplib) closes a connection idle for 5 s or after 100 requests."""
    text = runtimectl.upstream_text("blue", 8001)
    pool = text[text.index("upstream llmhost_runtime") : text.index("}")]
    assert "server 127.0.0.1:8001;" in pool
    assert re.search(r"keepalive [1-9]\d*;", pool)
    idle = re.search(r"keepalive_timeout (\d+)s;", pool)
    requests = re.search(r"keepalive_requests (\d+);", pool)
    assert idle and int(idle.group(1)) < 5
    assert requests and int(requests.group(1)) < 100


def materialised_model(directory: Path, content: bytes = b"weights") -> str:
    """A model directory as the puller leaves it: the file and its manifest; its digest."""
    directory.mkdir()
    (directory / "model.gguf").write_bytes(content)
    layer = {
        "mediaType": "application/octet-stream",
        "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
        "size": len(content),
        "annotations": {"org.opencontainers.image.title": "model.gguf"},
    }
    manifest = json.dumps({"schemaVersion": 2, "layers": [layer]}).encode()
    (directory / MANIFEST_FILE).write_bytes(manifest)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def check_model(directory: Path, digest: str) -> int:
    return runtimectl.main(["check-model", "--dir", str(directory), "--digest", digest])


def test_check_model_needs_the_wanted_manifest_and_every_file_it_lists(tmp_path: Path, capsys):
    model = tmp_path / "model"
    digest = materialised_model(model)
    assert check_model(model, digest) == 0
    assert check_model(tmp_path / "missing", digest) == 2
    assert "is missing" in capsys.readouterr().err
    assert check_model(model, "sha256:" + "0" * 64) == 2
    assert f"holds {digest}" in capsys.readouterr().err
    (model / "model.gguf").write_bytes(b"weigh")  # truncated since it was pulled
    assert check_model(model, digest) == 2
    assert "is incomplete" in capsys.readouterr().err


def test_complete_prints_the_runtimes_answer(server, capsys):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    assert runtimectl.main(["complete", "--port", port, "--model", "m"]) == 0
    assert json.loads(capsys.readouterr().out)["choices"][0]["text"] == " hi"


# -- cutover and rollback, with stand-in nginx/systemctl/systemd-run executables ---------------


@pytest.fixture
def host_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nginx, systemctl and systemd-run as scripts that log their arguments (and can fail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("nginx", "systemctl", "systemd-run"):
        script = bin_dir / tool
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> {log}\n'
            f'[ -e "{tmp_path}/fail-{tool}" ] && {{ echo "{tool} refused" >&2; exit 1; }}\n'
            'case "$*" in "is-active --quiet "*) [ -e "'
            + str(tmp_path)
            + '/cold" ] && exit 3;; esac\n'
            "exit 0\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def switch_args(tmp_path: Path, port: int, command: str, *extra: str) -> list[str]:
    return [
        command,
        *extra,
        "--ports",
        f"blue=9,green={port}",
        "--upstream",
        str(tmp_path / "upstream.conf"),
        "--state",
        str(tmp_path / "state.json"),
        "--ready-timeout",
        "2",
        "--rollback-window",
        "600",
    ]


def staged_state(path: Path) -> None:
    runtimectl.write_state(
        path,
        {
            "active": "blue",
            "history": [],
            "colours": {"blue": {"id": "r1", "model": "m"}, "green": {"id": "r2", "model": "m"}},
        },
    )


def test_cutover_switches_reloads_records_and_keeps_the_old_colour_warm(
    tmp_path, server, host_tools
):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    staged_state(tmp_path / "state.json")
    (tmp_path / "upstream.conf").write_text(runtimectl.upstream_text("blue", 9))
    assert runtimectl.main(switch_args(tmp_path, port, "cutover", "--to", "green")) == 0
    assert runtimectl.colour_in((tmp_path / "upstream.conf").read_text()) == "green"
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["active"] == "green"
    assert state["history"][-1] == {
        **state["history"][-1],
        "event": "cutover",
        "from": "blue",
        "to": "green",
        "release": "r2",
    }
    calls = host_tools.read_text().splitlines()
    assert "nginx -t -q" in calls and "systemctl reload nginx.service" in calls
    assert calls.index("nginx -t -q") < calls.index("systemctl reload nginx.service")
    assert any(
        c.startswith("systemd-run --unit=llmhost-rollback-window-blue --on-active=600")
        and c.endswith("systemctl stop llmhost-runtime@blue.service")
        for c in calls
    )
    assert "systemctl stop llmhost-rollback-window-green.timer" in calls


def test_cutover_requiring_a_gate_refuses_an_ungated_release_and_switches_a_passed_one(
    tmp_path, server, host_tools, capsys
):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    staged_state(tmp_path / "state.json")
    before = runtimectl.upstream_text("blue", 9)
    (tmp_path / "upstream.conf").write_text(before)
    args = [*switch_args(tmp_path, port, "cutover", "--to", "green"), "--require-gate"]
    assert runtimectl.main(args) == 1
    assert "has not passed its gate; nothing was switched" in capsys.readouterr().err
    assert (tmp_path / "upstream.conf").read_text() == before
    verdict = write_verdict(tmp_path, release="r2", passed=True)
    state = ["--state", str(tmp_path / "state.json")]
    assert runtimectl.main(["gate-record", *state, "--colour", "green", "--verdict", verdict]) == 0
    assert runtimectl.main(args) == 0
    assert runtimectl.colour_in((tmp_path / "upstream.conf").read_text()) == "green"


def test_a_failed_gate_check_stops_the_staged_colour_but_never_the_active_one(
    tmp_path, host_tools, capsys
):
    path = tmp_path / "state.json"
    staged_state(path)
    verdict = write_verdict(tmp_path, release="r2", passed=False, failures=["error rate"])
    assert runtimectl.main(["gate-record", "--state", str(path), "--colour", "green",
                            "--verdict", verdict]) == 0  # fmt: skip
    check = ["gate-check", "--state", str(path), "--release"]
    assert runtimectl.main([*check, "r2", "--colour", "green"]) == 1
    assert "green was stopped, blue serves" in capsys.readouterr().err
    assert "systemctl stop llmhost-runtime@green.service" in host_tools.read_text()
    host_tools.unlink()
    assert runtimectl.main([*check, "r1", "--colour", "blue"]) == 1, "blue never passed a gate"
    assert "systemctl stop" not in (host_tools.read_text() if host_tools.exists() else "")


def test_a_configuration_nginx_refuses_is_rolled_back_and_nothing_is_recorded(
    tmp_path, server, host_tools
):
    base, _ = server
    staged_state(tmp_path / "state.json")
    before = runtimectl.upstream_text("blue", 9)
    (tmp_path / "upstream.conf").write_text(before)
    (tmp_path / "fail-nginx").touch()
    port = int(base.rsplit(":", 1)[1])
    assert runtimectl.main(switch_args(tmp_path, port, "cutover", "--to", "green")) == 1
    assert (tmp_path / "upstream.conf").read_text() == before
    assert json.loads((tmp_path / "state.json").read_text())["active"] == "blue"


def test_behind_an_edge_the_switch_happens_out_of_the_pool_and_the_host_rejoins_after(
    tmp_path, server, host_tools, monkeypatch
):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    staged_state(tmp_path / "state.json")
    (tmp_path / "upstream.conf").write_text(runtimectl.upstream_text("blue", 9))
    flag = tmp_path / "drain"
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        runtimectl.time, "sleep", lambda s: seen.append((f"sleep {s}", flag.exists()))
    )
    switched = runtimectl.switch_gateway
    monkeypatch.setattr(
        runtimectl,
        "switch_gateway",
        lambda *a: (seen.append(("switch", flag.exists())), switched(*a)),
    )
    drain = ["--drain-flag", str(flag), "--drain-wait", "3.5", "--rejoin-wait", "2.5"]
    assert runtimectl.main([*switch_args(tmp_path, port, "cutover", "--to", "green"), *drain]) == 0
    assert seen[-3:] == [("sleep 3.5", True), ("switch", True), ("sleep 2.5", False)]
    assert not flag.exists()

    staged_state(tmp_path / "state.json")
    (tmp_path / "upstream.conf").write_text(runtimectl.upstream_text("blue", 9))
    (tmp_path / "fail-nginx").touch()  # a switch that fails still puts the host back
    seen.clear()
    assert runtimectl.main([*switch_args(tmp_path, port, "cutover", "--to", "green"), *drain]) == 1
    assert seen[-3:] == [("sleep 3.5", True), ("switch", True), ("sleep 2.5", False)]
    assert not flag.exists()


def test_a_colour_that_is_not_ready_is_never_switched_to(tmp_path, server, host_tools):
    base, handler = server
    handler.health = 503
    staged_state(tmp_path / "state.json")
    before = runtimectl.upstream_text("blue", 9)
    (tmp_path / "upstream.conf").write_text(before)
    port = int(base.rsplit(":", 1)[1])
    assert runtimectl.main(switch_args(tmp_path, port, "cutover", "--to", "green")) == 1
    assert (tmp_path / "upstream.conf").read_text() == before
    assert not host_tools.exists() or "nginx" not in host_tools.read_text()


def test_rollback_starts_a_cold_previous_colour_before_switching_to_it(
    tmp_path, server, host_tools
):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    runtimectl.write_state(
        tmp_path / "state.json",
        {
            "active": "blue",
            "history": [],
            "colours": {"blue": {"id": "r2", "model": "m"}, "green": {"id": "r1", "model": "m"}},
        },
    )
    (tmp_path / "upstream.conf").write_text(runtimectl.upstream_text("blue", 9))
    (tmp_path / "cold").touch()
    assert runtimectl.main(switch_args(tmp_path, port, "rollback")) == 0
    calls = host_tools.read_text().splitlines()
    assert calls.index("systemctl start llmhost-runtime@green.service") < calls.index(
        "systemctl reload nginx.service"
    )
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["active"] == "green" and state["history"][-1]["event"] == "rollback"


def test_rollback_with_nothing_to_return_to_refuses(tmp_path, host_tools):
    runtimectl.write_state(
        tmp_path / "state.json",
        {
            "active": "blue",
            "history": [],
            "colours": {"blue": {"id": "r1", "model": "m"}},
        },
    )
    assert runtimectl.main(switch_args(tmp_path, 9, "rollback")) == 1
