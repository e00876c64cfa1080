"""The demo's progress lines and closing summary: what a newcomer reads, checked.

The summary is a pure function of the demo's facts, so it is tested here without
hosts: the curl it prints is valid shell that carries the key, the CA and the URL;
the tunnel reaches Prometheus; the README shows exactly what the demo prints.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from llmhost import demo
from llmhost.cli import main
from llmhost.converge import RunResult
from llmhost.demo import (
    STAGES,
    DemoFacts,
    DemoHost,
    Progress,
    curl_argv,
    stage_line,
    summary,
    tunnel_argv,
)
from llmhost.paths import REPO_ROOT

ROOT = "/var/lib/llmhost-testbed"
SSH = (
    "ssh", "-i", f"{ROOT}/ssh/id_ed25519", "-o", f"UserKnownHostsFile={ROOT}/ssh/known_hosts",
    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
    "-o", "LogLevel=ERROR", "root@10.231.1.2",
)  # fmt: skip


def facts(*names: str, key: str = "DEMO-KEY-printed-here", **changes) -> DemoFacts:
    hosts = tuple(
        DemoHost(
            name=name,
            address=f"10.231.{index}.2",
            gateway_port=8000,
            gate_report=f"/root/llmhost/gates/{name}/4f1c2b9a7d3e/report.html",
        )
        for index, name in enumerate(names or ("tb1",), 1)
    )
    values = {
        "hosts": hosts,
        "model": "tiny-llama",
        "api_key": key,
        "keys_file": f"{ROOT}/secrets/api-keys.json",
        "ca_file": f"{ROOT}/secrets/ca/ca.crt",
        "monitoring": hosts[0],
        "prometheus_port": 9090,
        "ssh": SSH,
        **changes,
    }
    return DemoFacts(**values)


def line_starting(text: str, start: str) -> str:
    (found,) = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    return found


def test_a_stage_line_says_which_stage_of_how_many_and_the_time_so_far():
    assert stage_line(2, 7, 83.9, "building llama-server for class cpu") == (
        "[2/7 01:23] building llama-server for class cpu..."
    )
    assert stage_line(7, 7, 3600 + 5, "done").startswith("[7/7 60:05] ")


def test_progress_counts_the_stages_and_times_them_from_the_start(monkeypatch):
    clock = iter([100.0, 100.0, 161.0, 161.0, 400.0])
    monkeypatch.setattr(demo.time, "monotonic", lambda: next(clock))
    progress = Progress()
    assert progress.next() == f"[1/{len(STAGES)} 00:00] {STAGES[0]}..."
    assert progress.next() == f"[2/{len(STAGES)} 01:01] {STAGES[1]}..."
    assert progress.elapsed() == "01:01"
    assert progress.elapsed() == "05:00"


def test_the_curl_is_valid_shell_carrying_the_key_the_ca_and_the_url():
    shown = summary(facts())
    curl = line_starting(shown, "curl ")
    argv = shlex.split(curl)
    assert argv == curl_argv(facts(), facts().hosts[0]), "shlex round trip"
    assert argv[argv.index("--cacert") + 1] == f"{ROOT}/secrets/ca/ca.crt"
    assert "Authorization: Bearer DEMO-KEY-printed-here" in argv
    assert argv[-1] == "https://10.231.1.2:8000/v1/completions"
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "tiny-llama" and body["prompt"] and body["max_tokens"] > 0


@pytest.mark.parametrize("key", ["a b'c\"$(rm -rf ~)`x`", "k" * 64])
def test_the_curl_stays_one_command_whatever_the_key_holds(key):
    argv = shlex.split(line_starting(summary(facts(key=key)), "curl "))
    assert f"Authorization: Bearer {key}" in argv and argv[0] == "curl"


def test_the_summary_names_every_gateway_the_key_the_ca_and_each_gate_report():
    shown = summary(facts("tb1", "tb2"))
    assert "https://10.231.1.2:8000" in shown and "https://10.231.2.2:8000" in shown
    assert "DEMO-KEY-printed-here" in shown and f"{ROOT}/secrets/api-keys.json" in shown
    assert f"{ROOT}/secrets/ca/ca.crt" in shown
    for name in ("tb1", "tb2"):
        assert f"/root/llmhost/gates/{name}/4f1c2b9a7d3e/report.html" in shown
    unreported = replace(facts(), hosts=(DemoHost("tb1", "10.231.1.2", 8000, None),))
    assert "tb1  none recorded" in summary(unreported)


def test_prometheus_is_reached_through_a_tunnel_to_the_monitoring_host():
    shown = summary(facts("tb1", "tb2"))
    tunnel = shlex.split(line_starting(shown, "ssh "))
    assert tunnel == tunnel_argv(facts("tb1", "tb2"))
    assert tunnel[-1] == "root@10.231.1.2", "the monitoring host, last"
    assert tunnel[tunnel.index("-L") + 1] == "9090:127.0.0.1:9090" and "-N" in tunnel
    assert tunnel[: len(SSH) - 1] == list(SSH[:-1]), "the testbed's key and known hosts"
    assert "http://127.0.0.1:9090/" in shown


def test_the_summary_ends_with_how_to_take_it_all_down():
    assert summary(facts()).rstrip().endswith("llmhost demo --down")


def test_the_readme_walks_through_exactly_what_the_demo_runs_and_prints():
    readme = (REPO_ROOT / "README.md").read_text()
    for number, text in enumerate(STAGES, 1):
        assert f"[{number}/{len(STAGES)} " in readme and f"] {text}..." in readme
    assert summary(facts()) in readme, (
        "paste summary(facts()) from tests/unit/test_demo.py into the README"
    )


def test_demo_down_takes_the_testbed_down_and_runs_nothing_else(monkeypatch):
    called = []
    from llmhost.testing.testbed import Testbed

    monkeypatch.setattr(Testbed, "down", lambda self, purge_image=False: called.append("down"))
    monkeypatch.setattr(Testbed, "up", lambda self, count: pytest.fail("--down booted hosts"))
    result = CliRunner().invoke(main, ["demo", "--down"])
    assert result.exit_code == 0, result.output
    assert called == ["down"] and "the demo is down" in result.output


def converged(changes: int) -> RunResult:
    totals = {"success": changes, "error": 0}
    return RunResult(0, "", "", {"results": {"totals": totals, "operations": []}})


def test_the_demo_prints_each_stage_then_the_summary_on_stdout(monkeypatch, tmp_path):
    """The command's flow with every step stubbed: stage lines in order, summary last."""
    from llmhost.testing.testbed import Testbed

    hosts = [SimpleNamespace(name="tb1", address="10.231.1.2")]
    monkeypatch.setattr(Testbed, "up", lambda self, count: hosts)
    stubs = {
        "converge_hosts": lambda inventory, data=None: converged(3),
        "require_idempotent": lambda inventory, data=None: None,
        "demo_catalog": lambda testbed: tmp_path,
        "mirror_demo_model": lambda testbed, catalog: "sha256:" + "1" * 64,
        "publish_demo_runtime": lambda testbed: "sha256:" + "2" * 64,
        "demo_key": lambda testbed: "DEMO-KEY-printed-here",
        "ask_demo_model": lambda testbed, host: "generated 8 tokens",
        "demo_facts": lambda testbed, found, key: facts(key=key),
    }
    for name, stub in stubs.items():
        monkeypatch.setattr(demo, name, stub)
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(tmp_path / "builds.toml"))
    result = CliRunner().invoke(main, ["demo"])

    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line.split("] ", 1)[1] for line in progress] == [f"{s}..." for s in STAGES]
    assert [line.split()[0] for line in progress] == [f"[{n}/7" for n in range(1, 8)]
    assert result.stdout == summary(facts()) + "\n"
