"""The soak and eval gate on a real host: real llama-server colours on tb1, the soak running
next to them, the eval's answers checked here, and cutover only for a release that passed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from llmhost import converge
from llmhost.catalog import model_toml
from llmhost.onhost.layout import GATEWAY_UPSTREAM, STATE_FILE
from llmhost.soakreport import schema
from llmhost.testing.testmodels import write_tiny_gguf
from roles._common.onhost import runtimectl
from roles.gate.defaults import GATES_DIR
from roles.runtime.defaults import unit_name
from tests.e2e.conftest import cli, sync_to_dr, write_inventory

pytestmark = pytest.mark.e2e

MODEL = "gt-one"
EVAL_SET = [
    {"id": "story", "prompt": "Once upon a time", "max_tokens": 8, "check": {"regex": r"\w"}},
    {"id": "weather", "prompt": "The weather today", "max_tokens": 8, "check": {"regex": r"\w"}},
    {"id": "json", "prompt": "Answer in JSON:", "max_tokens": 8,
     "check": {"json_schema": {"type": "object"}}},
]  # fmt: skip
LENIENT = {"ttft_p95_ms": 60000, "e2e_p99_ms": 60000, "min_tokens_per_s": 0.1}


def publish(catalog: Path, testbed, hosts, seed: int) -> None:
    """gt-one (weights from ``seed``) with an eval set, mirrored to both registries."""
    weights = write_tiny_gguf(
        catalog.parent / "gate-sources" / str(seed) / f"{MODEL}.gguf", seed=seed
    )
    source = {"kind": "local", "path": str(weights.parent)}
    text = model_toml(MODEL, "gguf", source, [(weights.name, weights)])
    (catalog / f"{MODEL}.toml").write_text(
        text.replace("[source]", 'eval_set = "evals/gt.jsonl"\n\n[source]', 1)
    )
    done = cli("models", "mirror", MODEL, "--inventory", "inventories/testbed.py")
    assert done.returncode == 0, done.stderr[-2000:]
    sync_to_dr(testbed, hosts)


@pytest.fixture(scope="module")
def gated(published, runtime_catalog, testbed, hosts, tmp_path_factory):
    """gt-one published with its eval set; control-side reports in a directory of our own."""
    evals = runtime_catalog / "evals"
    evals.mkdir(exist_ok=True)
    (evals / "gt.jsonl").write_text("\n".join(json.dumps(line) for line in EVAL_SET) + "\n")
    publish(runtime_catalog, testbed, hosts, seed=21)
    reports = tmp_path_factory.mktemp("gates")
    saved = os.environ.get("LLMHOST_GATES_DIR")
    os.environ["LLMHOST_GATES_DIR"] = str(reports)
    yield reports
    if saved is None:
        os.environ.pop("LLMHOST_GATES_DIR", None)
    else:
        os.environ["LLMHOST_GATES_DIR"] = saved


def deploy(tmp_path: Path, testbed, hosts, **data):
    host = hosts[0]
    data = {"model_name": MODEL, **data}
    path = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{host.name: data})
    return converge.run(path)


def state(testbed, host) -> dict:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def answers_on(testbed, host, colour: str) -> bool:
    port = {"blue": 8001, "green": 8002}[colour]
    out = testbed.ssh(
        host, runtimectl("complete", "--port", str(port), "--model", MODEL, "--max-tokens", "2")
    )
    return bool(json.loads(out)["choices"])


def test_a_lenient_gate_passes_reports_on_both_sides_and_a_second_run_changes_nothing(
    tmp_path, testbed, hosts, gated, runtime_catalog
):
    host = hosts[0]
    first = deploy(tmp_path, testbed, hosts, gate_limits=LENIENT)
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    recorded = state(testbed, host)
    verdict = recorded["last_gate"]
    active = recorded["active"]
    release = recorded["colours"][active]["id"]
    assert verdict["passed"] and verdict["release"] == release and verdict["failures"] == []
    assert recorded["colours"][active]["gate"]["passed"]
    assert [e["event"] for e in recorded["history"]][-3:] == ["staged", "gate passed", "cutover"]

    control = gated / host.name / release
    document = json.loads((control / "result.json").read_text())
    jsonschema.validate(document, schema())
    assert document["summary"]["requests"] == 300 and document["summary"]["ok"] == 300
    assert document["eval"]["score"] == pytest.approx(2 / 3), "the JSON check fails on gibberish"
    report = (control / "report.html").read_text()
    assert report.count("<svg") == 3 and report.count('class="point"') == 300
    assert 'class="bar"' in report and 'class="line"' in report and "<h2>Eval</h2>" in report
    on_host = testbed.ssh(host, f"cat {GATES_DIR}/{release}/result.json")
    assert json.loads(on_host) == document
    assert testbed.ssh(host, f"test -s {GATES_DIR}/{release}/report.html && echo yes") == "yes\n"
    golden = runtime_catalog / "golden" / MODEL / f"{release}.json"
    assert json.loads(golden.read_text())["release"]["id"] == release

    second = deploy(tmp_path, testbed, hosts, gate_limits=LENIENT)
    assert second.returncode == 0 and second.changes == 0, second.changed_operations()


def test_an_impossible_gate_fails_stops_the_staged_colour_and_nothing_is_cut_over(
    tmp_path, testbed, hosts, gated
):
    host = hosts[0]
    before = state(testbed, host)
    upstream = testbed.ssh(host, f"cat {GATEWAY_UPSTREAM}")
    active = before["active"]
    idle = "green" if active == "blue" else "blue"
    result = deploy(
        tmp_path,
        testbed,
        hosts,
        gate_limits={"ttft_p95_ms": 0.001},
        runtime_extra_args=["--threads", "1"],  # a new release
    )
    assert result.returncode != 0
    assert "failed its gate: ttft_p95_ms" in result.stderr, result.stderr[-3000:]
    assert f"{idle} was stopped, {active} serves" in result.stderr
    after = state(testbed, host)
    assert after["active"] == active and testbed.ssh(host, f"cat {GATEWAY_UPSTREAM}") == upstream
    assert not after["last_gate"]["passed"]
    assert after["last_gate"]["report"] in result.stderr, "the operator is told where to look"
    assert testbed.ssh(host, f"systemctl is-active {unit_name(idle)}", check=False).strip() != (
        "active"
    )
    assert answers_on(testbed, host, active)
    report = Path(after["last_gate"]["control_report"]) / "report.html"
    assert "Gate FAIL" in report.read_text()


def test_killing_the_runtime_mid_soak_fails_the_gate_and_no_cutover_happens(
    tmp_path, testbed, hosts, gated
):
    host = hosts[0]
    before = state(testbed, host)
    active = before["active"]
    idle = "green" if active == "blue" else "blue"
    port = {"blue": 8001, "green": 8002}[idle]
    killed: list[str] = []

    def kill_when_the_soak_runs() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            # [o]/[l]: patterns that do not match the shell running pgrep/pkill itself.
            running = testbed.ssh(host, "pgrep -f '[o]nhost.pyz soak --url' || true", check=False)
            if running.strip():
                time.sleep(1.0)
                killed.append(
                    testbed.ssh(host, f"pkill -9 -f '[l]lama-server.*--port {port}'; echo done")
                )
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_when_the_soak_runs)
    killer.start()
    result = deploy(
        tmp_path,
        testbed,
        hosts,
        gate_limits=LENIENT,
        gate_requests=2000,
        runtime_extra_args=["--threads", "2"],  # another new release
    )
    killer.join()
    assert killed, "the soak was never seen running"
    assert result.returncode != 0
    assert "failed its gate" in result.stderr, result.stderr[-3000:]
    after = state(testbed, host)
    assert after["active"] == active, "no cutover"
    verdict = after["last_gate"]
    assert not verdict["passed"] and any("error rate" in f for f in verdict["failures"])
    document = json.loads((Path(verdict["control_report"]) / "result.json").read_text())
    assert document["summary"]["requests"] < 2000, "the run stopped once it had failed"
    assert set(document["summary"]["errors"]) & {"connection", "protocol"}
    assert answers_on(testbed, host, active)


def test_a_changed_model_digest_under_a_recorded_golden_set_is_reported_as_drift(
    tmp_path, testbed, hosts, gated, runtime_catalog
):
    host = hosts[0]
    replaced = state(testbed, host)
    old = replaced["colours"][replaced["active"]]
    publish(runtime_catalog, testbed, hosts, seed=22)  # the same model name, new weights
    result = deploy(tmp_path, testbed, hosts, gate_limits=LENIENT)
    assert result.returncode == 0 and result.errors == 0, result.stderr[-4000:]
    after = state(testbed, host)
    release = after["colours"][after["active"]]
    assert release["model_digest"] != old["model_digest"]
    assert after["last_gate"]["drift"] >= 1
    control = gated / host.name / release["id"] / "result.json"
    evaluation = json.loads(control.read_text())["eval"]
    assert evaluation["golden"] == old["id"]
    assert any(c.startswith("model digest") for c in evaluation["changed"])
    assert evaluation["drift"] and all(d["golden"] != d["answer"] for d in evaluation["drift"])
