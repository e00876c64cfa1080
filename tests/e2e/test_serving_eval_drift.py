"""The production eval on a real serving host: the timer's service scores the active colour,
node exporter and Prometheus carry the score, and answers that drift lower it and fire
EvalScoreBelowGate.

tb1 is the monitoring host (Prometheus) and a registry; tb2 serves ed-one, a tiny GGUF
with an eval set, gated and cut over by a normal converge. Prometheus's API is asked from
tb1 itself (its port is closed to everyone else).

Named to run after test_runtime.py: its release leaves tb2's active colour on the other
colour, and the runtime and monitoring tests expect tb2 to take its first release on blue.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from llmhost import converge
from llmhost.catalog import model_toml
from llmhost.onhost.layout import (
    EVAL_DIR,
    EVAL_METRICS_LINK,
    EVAL_SET_FILE,
    GATES_DIR,
    STATE_FILE,
)
from llmhost.testing.testmodels import write_tiny_gguf
from roles._common.onhost import runtimectl
from tests.e2e.conftest import cli, sync_to_dr, write_inventory
from tests.e2e.test_gate import EVAL_SET, LENIENT  # the same eval set, gated as leniently
from tests.e2e.test_monitoring import prometheus, query, wait_for

pytestmark = pytest.mark.e2e

MODEL = "ed-one"
SERVICE = "llmhost-eval-drift.service"


def serving_data() -> dict:
    return {"model_name": MODEL, "gate_limits": LENIENT, "monitoring_eval_tolerance": 0.05}


@pytest.fixture(scope="module")
def served(published, runtime_catalog, testbed, hosts, tmp_path_factory):
    """ed-one with its eval set, mirrored; tb2 converged twice (the second changing nothing),
    so its release passed its gate, serves, and has the eval-drift timer."""
    evals = runtime_catalog / "evals"
    evals.mkdir(exist_ok=True)
    (evals / "ed.jsonl").write_text("\n".join(json.dumps(line) for line in EVAL_SET) + "\n")
    weights = write_tiny_gguf(runtime_catalog.parent / "ed-sources" / f"{MODEL}.gguf", seed=31)
    source = {"kind": "local", "path": str(weights.parent)}
    text = model_toml(MODEL, "gguf", source, [(weights.name, weights)])
    (runtime_catalog / f"{MODEL}.toml").write_text(
        text.replace("[source]", 'eval_set = "evals/ed.jsonl"\n\n[source]', 1)
    )
    done = cli("models", "mirror", MODEL, "--inventory", "inventories/testbed.py")
    assert done.returncode == 0, done.stderr[-2000:]
    sync_to_dr(testbed, hosts)
    saved = os.environ.get("LLMHOST_GATES_DIR")
    os.environ["LLMHOST_GATES_DIR"] = str(tmp_path_factory.mktemp("gates"))
    path = write_inventory(
        tmp_path_factory.mktemp("eval-drift") / "inventory.py",
        testbed,
        hosts,
        **{hosts[1].name: serving_data()},
    )
    try:
        first = converge.run(path)
        assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
        second = converge.run(path)
        assert second.returncode == 0 and second.changes == 0, second.changed_operations()
        yield path
    finally:
        if saved is None:
            os.environ.pop("LLMHOST_GATES_DIR", None)
        else:
            os.environ["LLMHOST_GATES_DIR"] = saved


def state(testbed, host) -> dict:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def run_eval(testbed, host) -> None:
    """One run of the timer's service, as the timer would start it (oneshot: waits for it)."""
    testbed.ssh(host, f"systemctl start {SERVICE}")


def node_metrics(testbed, host) -> dict[str, float]:
    """The llmhost_eval_* samples node exporter serves on the host, by name and labels."""
    script = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=10).read().decode())"
    )
    found = {}
    for line in testbed.ssh(host, f'python3 -c "{script}"').splitlines():
        if line.startswith(("llmhost_eval_", "llmhost_gate_eval_score")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def labels(release: str, colour: str) -> str:
    return f'{{colour="{colour}",release="{release}"}}'  # node exporter sorts label names


def test_the_timer_is_installed_hardened_and_its_eval_scores_the_active_colour_as_its_gate(
    testbed, hosts, served
):
    serving = hosts[1]
    assert testbed.ssh(serving, "systemctl is-active llmhost-eval-drift.timer").strip() == "active"
    owner = testbed.ssh(serving, f"stat -c '%U:%G %a' {EVAL_SET_FILE}").split()
    assert owner == ["root:llmhost", "640"]
    shown = testbed.ssh(serving, f"systemctl show -p User -p NoNewPrivileges {SERVICE}")
    assert "User=llmhost-eval" in shown and "NoNewPrivileges=yes" in shown
    security = testbed.ssh(serving, f"systemd-analyze security {SERVICE} --no-pager")
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)
    assert level, security
    exposure = float(level[1])
    assert exposure <= 2.0, security  # 1.5 offline on Debian 12's systemd
    recorded = state(testbed, serving)
    active = recorded["active"]
    release = recorded["colours"][active]["id"]
    gated = recorded["colours"][active]["gate"]["eval_score"]
    run_eval(testbed, serving)
    assert testbed.ssh(serving, f"readlink {EVAL_METRICS_LINK}").strip() == (
        f"{EVAL_DIR}/llmhost-eval.prom"
    )
    found = node_metrics(testbed, serving)
    tag = labels(release, active)
    assert found["llmhost_eval_up"] == 1
    assert found[f"llmhost_eval_score{tag}"] == pytest.approx(gated), "scored as at the gate"
    assert found[f"llmhost_eval_cases{tag}"] == 3
    assert found[f"llmhost_eval_compared_cases{tag}"] == 3
    # The same release at temperature 0 on an idle engine: the gate's very tokens.
    assert found[f"llmhost_eval_drift_cases{tag}"] == 0
    assert found[f'llmhost_gate_eval_score{{release="{release}"}}'] == pytest.approx(gated)
    assert found["llmhost_eval_tolerance"] == 0.05
    monitor = hosts[0]
    seen = wait_for(
        lambda: query(testbed, monitor, f'llmhost_eval_score{{host="{serving.name}"}}'),
        60,
        "the production eval's score in Prometheus",
    )
    assert seen[0]["metric"]["release"] == release and seen[0]["metric"]["colour"] == active


def test_node_exporter_reads_the_eval_metrics_through_the_link_without_an_error(
    testbed, hosts, served
):
    monitor, serving = hosts
    wanted = f'node_textfile_scrape_error{{host="{serving.name}"}}'
    errors = wait_for(lambda: query(testbed, monitor, wanted), 60, "the textfile scrape status")
    assert errors[0]["value"][1] == "0", "a dangling link or a half-written file is an error"


def test_answers_that_differ_from_the_gates_are_counted_as_drift(testbed, hosts, served):
    serving = hosts[1]
    recorded = state(testbed, serving)
    active = recorded["active"]
    release = recorded["colours"][active]["id"]
    result = f"{GATES_DIR}/{release}/result.json"
    original = testbed.ssh(serving, f"cat {result}")
    document = json.loads(original)
    document["eval"]["answers"]["story"] = "an answer the engine never gave"
    testbed.put(serving, result, json.dumps(document), mode="0644")
    try:
        run_eval(testbed, serving)
        found = node_metrics(testbed, serving)
        tag = labels(release, active)
        assert found[f"llmhost_eval_drift_cases{tag}"] == 1
        assert found[f"llmhost_eval_regressed_cases{tag}"] == 0, "both answers pass `\\w`"
        last = json.loads(testbed.ssh(serving, f"cat {EVAL_DIR}/last-run.json"))
        story = next(r for r in last["results"] if r["id"] == "story")
        assert story["drifted"] and story["gate_answer"] == "an answer the engine never gave"
    finally:
        testbed.put(serving, result, original, mode="0644")


def test_a_lower_score_fires_the_alert_and_a_converge_puts_the_eval_set_back(
    testbed, hosts, served
):
    monitor, serving = hosts
    recorded = state(testbed, serving)
    active = recorded["active"]
    release = recorded["colours"][active]["id"]
    original = json.loads(testbed.ssh(serving, f"cat {EVAL_SET_FILE}"))
    failing = json.loads(json.dumps(original))
    for item in failing["items"]:
        item["check"] = {"exact": "an answer no engine gives"}  # every check fails now
    testbed.put(serving, EVAL_SET_FILE, json.dumps(failing), mode="0640")
    testbed.ssh(serving, f"chown root:llmhost {EVAL_SET_FILE}")
    run_eval(testbed, serving)
    assert node_metrics(testbed, serving)[f"llmhost_eval_score{labels(release, active)}"] == 0
    firing = wait_for(
        lambda: [
            a
            for a in prometheus(testbed, monitor, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "EvalScoreBelowGate"
            and a["labels"].get("host") == serving.name
            and a["state"] == "firing"
        ],
        60 + 15 + 60,  # the rule's `for`, a scrape, and an evaluation
        "EvalScoreBelowGate firing",
    )
    assert firing[0]["labels"]["release"] == release
    assert firing[0]["labels"]["colour"] == active
    # The next converge writes the eval set back; the next run scores as the gate again.
    again = converge.run(served)
    assert again.returncode == 0, again.stderr[-3000:]
    assert any(EVAL_SET_FILE in op for op in again.changed_operations())
    assert json.loads(testbed.ssh(serving, f"cat {EVAL_SET_FILE}")) == original
    run_eval(testbed, serving)
    gated = recorded["colours"][active]["gate"]["eval_score"]
    found = node_metrics(testbed, serving)
    assert found[f"llmhost_eval_score{labels(release, active)}"] == pytest.approx(gated)
    expression = f'ALERTS{{alertname="EvalScoreBelowGate",host="{serving.name}"}}'
    wait_for(
        lambda: not query(testbed, monitor, expression) or None,
        90,
        "EvalScoreBelowGate resolved",
    )


def test_an_engine_that_is_down_is_a_failed_run_that_keeps_the_last_score(testbed, hosts, served):
    serving = hosts[1]
    recorded = state(testbed, serving)
    active = recorded["active"]
    release = recorded["colours"][active]["id"]
    unit = f"llmhost-runtime@{active}.service"
    testbed.ssh(serving, f"systemctl stop {unit}")
    try:
        failed = testbed.ssh(serving, f"systemctl start {SERVICE}; echo $?", check=False)
        assert failed.strip().splitlines()[-1] != "0", "the oneshot fails with the engine down"
        found = node_metrics(testbed, serving)
        assert found["llmhost_eval_up"] == 0
        assert found['llmhost_eval_up_reason{reason="engine unreachable"}'] == 1
        assert f"llmhost_eval_score{labels(release, active)}" in found
    finally:
        testbed.ssh(serving, f"systemctl start {unit}")
        port = {"blue": 8001, "green": 8002}[active]
        ready = runtimectl("ready", "--port", str(port), "--model", MODEL, "--timeout", "110")
        testbed.ssh(serving, ready)
    run_eval(testbed, serving)
    assert node_metrics(testbed, serving)["llmhost_eval_up"] == 1


def test_an_empty_schedule_removes_the_timer_and_its_metrics(testbed, hosts, served, tmp_path):
    serving = hosts[1]
    path = write_inventory(
        tmp_path / "inventory.py",
        testbed,
        hosts,
        **{serving.name: {**serving_data(), "monitoring_eval_schedule": ""}},
    )
    off = converge.run(path)
    assert off.returncode == 0 and off.errors == 0, off.stderr[-3000:]
    gone = testbed.ssh(
        serving,
        f"systemctl is-enabled llmhost-eval-drift.timer; test -e {EVAL_METRICS_LINK}; echo $?; "
        f"test -e {EVAL_SET_FILE}; echo $?; test -e {EVAL_DIR}; echo $?",
        check=False,
    ).split()
    assert gone[-3:] == ["1", "1", "1"], gone
    assert not any(name.startswith("llmhost_eval_") for name in node_metrics(testbed, serving))
    again = converge.run(path)
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()
