"""The CLI's help, version, documentation and input checks (no host is contacted)."""

import asyncio
import contextlib
import json
import subprocess
import sys
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from llmhost import __version__, converge, soakrun
from llmhost.cli import main
from llmhost.cli.errors import LlmhostGroup
from llmhost.converge import BatchProgress, RolloutFailed, RunResult, roll_out, rollout_batches
from llmhost.errors import ConfigError
from llmhost.onhost import soak as load
from llmhost.paths import REPO_ROOT
from llmhost.reference import BEGIN, END, markdown


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def run_cli(*args):
    """In a child process: loading inventories imports pyinfra's CLI, which gevent-patches."""
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", *args], capture_output=True, text=True, cwd=REPO_ROOT
    )
    return SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr)


def test_version_and_help_teach_the_commands():
    assert invoke("--version").output.strip() == f"llmhost, version {__version__}"
    help_text = invoke("--help").output
    listed = {line.split()[0] for line in help_text.split("Commands:")[1].splitlines() if line}
    assert {"check", "deploy", "demo", "testbed", "config"} <= listed
    assert "llmhost demo" in help_text
    assert "10.231.N.2" in invoke("testbed", "--help").output


def test_readme_reference_is_the_generated_one():
    readme = (REPO_ROOT / "README.md").read_text()
    embedded = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert embedded == markdown(), "README is stale: paste `llmhost config reference` into it"


def test_reference_covers_every_base_setting():
    from dataclasses import fields

    from roles.base.defaults import BaseSettings

    for field in fields(BaseSettings):
        assert f"| `{field.name}` |" in markdown()


def test_shipped_example_inventories_are_valid():
    for inventory in ("inventories/example_uk_eu.py", "inventories/single_box.py"):
        result = run_cli("check", str(REPO_ROOT / inventory))
        assert result.exit_code == 0, result.output
        assert result.output.startswith("ok: ")


def test_check_names_host_key_and_fix(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text('web = [("w1", {"region": "us-east-1", "hardware": "cpu"})]\n')
    result = run_cli("check", str(inventory))
    assert result.exit_code == 1, "problems found"
    assert "host w1: key `region`: 'us-east-1' is outside" in result.output
    assert "Fix: " in result.output


def test_empty_inventory_and_unmatched_limit_are_errors(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("serving = []\n")
    assert run_cli("check", str(empty)).exit_code == 2
    assert "resolves to no hosts" in run_cli("deploy", str(empty)).output
    example = str(REPO_ROOT / "inventories/example_uk_eu.py")
    limited = run_cli("check", example, "--limit", "nope*")
    assert limited.exit_code == 2 and "with --limit nope*" in limited.output
    assert run_cli("check", example, "--limit", "registry").output.startswith("ok: 2 host(s)")


def test_check_refuses_a_host_that_widens_the_residency_policy_for_itself(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(
        'web = [("w1", {"region": "us-east-1", "hardware": "cpu", '
        '"residency_allowed_regions": ["us"]})]\n'
    )
    result = run_cli("check", str(inventory))
    assert result.exit_code == 1
    assert "host w1: key `residency_allowed_regions`: is set on the host itself" in result.output


def test_runtimes_list_shows_the_pins_and_what_each_class_has_built(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(tmp_path / "builds.toml"))
    result = invoke("runtimes", "list")
    assert result.exit_code == 0, result.output
    assert "sha256:832db0699007f1be" in result.output
    assert "cpu\tllama.cpp\tnot built" in result.output
    assert "l40s\tvllm\tnot built" in result.output


def test_runtimes_build_refuses_an_unknown_class_before_building_anything():
    result = invoke("runtimes", "build", "--class", "tpu", "--registry", "r:5000")
    assert result.exit_code == 2
    assert "'tpu' is not a class" in result.output
    assert "runtimes build" in invoke("runtimes", "--help").output


def test_a_rollout_goes_canary_first_then_in_batches_in_inventory_order():
    names = [f"h{i}" for i in range(1, 7)]
    assert rollout_batches(names, 2, 1) == [["h1"], ["h2", "h3"], ["h4", "h5"], ["h6"]]
    assert rollout_batches(names, 5, 2) == [["h1", "h2"], ["h3", "h4", "h5", "h6"]]
    assert rollout_batches(["h1"], 3, 1) == [["h1"]]


# -- errors become one red line and an exit code, in one place ---------------------------------


def failing_group(error: Exception) -> click.Group:
    """A group like `main` with one command that raises ``error``."""
    group = LlmhostGroup()

    @group.command()
    def boom() -> None:
        raise error

    return group


def test_a_config_error_from_any_command_exits_2_with_one_error_line():
    bad = ConfigError("'mars-1' is not a region", key="region", fix="use gb-lon", host="h1")
    result = CliRunner().invoke(failing_group(bad), ["boom"])
    assert result.exit_code == 2
    assert (
        result.output == "error: host h1: key `region`: 'mars-1' is not a region. Fix: use gb-lon\n"
    )
    assert isinstance(result.exception, SystemExit)  # handled by click, not a traceback


def test_a_testbed_error_exits_2_and_other_errors_are_left_alone():
    from llmhost.testing.testbed import TestbedError

    result = CliRunner().invoke(failing_group(TestbedError("run as root")), ["boom"])
    assert (result.exit_code, result.output) == (2, "error: run as root\n")
    other = CliRunner().invoke(failing_group(RuntimeError("a bug")), ["boom"])
    assert isinstance(other.exception, RuntimeError)  # a bug still shows its traceback


def test_the_real_commands_go_through_the_conversion(tmp_path, monkeypatch):
    from llmhost.cli import testbed
    from llmhost.testing.testbed import TestbedError

    missing = invoke("models", "--catalog", str(tmp_path), "mirror", "nope", "--registry", "r:1")
    assert missing.exit_code == 2 and missing.output.startswith("error: key `model`: no model")

    class Unbootable:
        def up(self, count: int) -> None:
            raise TestbedError(f"cannot boot {count} hosts here")

    monkeypatch.setattr(testbed, "_testbed", Unbootable)
    booted = invoke("testbed", "up", "--hosts", "3")
    assert (booted.exit_code, booted.output) == (2, "error: cannot boot 3 hosts here\n")


# -- rolling rollouts ------------------------------------------------------------------------


def pyinfra_result(returncode: int, changes: int = 0) -> RunResult:
    report = {"results": {"totals": {"success": changes, "error": 0}, "operations": []}}
    return RunResult(returncode, "", "", report)


def test_a_converge_summary_names_the_changed_operations_when_there_are_few():
    operations = [
        {"name": "llmhost base | Firewall", "success": ["tb1", "tb2"]},
        {"name": "llmhost gateway | nginx", "success": []},
    ]
    report = {"results": {"totals": {"success": 2, "error": 0}, "operations": operations}}
    result = RunResult(0, "", "", report)
    assert result.summary() == (
        "converged: 2 operation(s) changed\n  llmhost base | Firewall on tb1, tb2"
    )
    assert result.summary(named_up_to=0) == "converged: 2 operation(s) changed"
    assert pyinfra_result(0).summary() == "converged: 0 operation(s) changed"


@pytest.fixture
def batches_run(monkeypatch):
    """`converge.run` replaced: batch 2 fails; returns the limits it was run with."""
    ran: list[tuple[str, ...]] = []

    def fake_run(inventory, deploy, *, limit=(), stream_stderr=False, **_):
        ran.append(limit)
        return pyinfra_result(1 if len(ran) == 2 else 0, changes=3)

    monkeypatch.setattr(converge, "run", fake_run)
    return ran


def test_a_rollout_stops_at_the_first_failed_batch_and_names_the_untouched_hosts(batches_run):
    names = [f"h{i}" for i in range(1, 6)]
    seen: list[BatchProgress] = []
    with pytest.raises(RolloutFailed) as failed:
        roll_out("inv.py", "site.py", names, 2, 1, seen.append)
    assert batches_run == [("h1",), ("h2", "h3")]  # batch 3 never ran
    assert str(failed.value).startswith("batch 2 failed; rollout stopped. Not touched: h4, h5.")
    assert [(p.number, p.total, p.hosts, p.result is None) for p in seen] == [
        (1, 3, ["h1"], True),
        (1, 3, ["h1"], False),
        (2, 3, ["h2", "h3"], True),
    ]


class FakeShare:
    """A canary's share (llmhost.canary.Canary): its verdict given, its steps recorded."""

    def __init__(self, decision: str) -> None:
        self.decision = decision
        self.steps: list[str] = []

    @contextlib.contextmanager
    def sharing(self):
        self.steps.append("shared")
        try:
            yield self.judged
        finally:
            self.steps.append("restored")

    def judged(self):
        self.steps.append("judged")
        return SimpleNamespace(decision=self.decision, reason="3 of 20 answers were 5xx")


def test_a_canary_not_promoted_stops_the_rollout_after_its_batch(monkeypatch):
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(
        converge, "run", lambda *_, limit=(), **__: ran.append(limit) or pyinfra_result(0)
    )
    share = FakeShare("rolled back")
    with pytest.raises(RolloutFailed) as failed:
        roll_out("inv.py", "site.py", ["a", "b", "c"], 1, 1, lambda _: None, share)
    assert str(failed.value) == (
        "canary a rolled back: 3 of 20 answers were 5xx; rollout stopped. Not touched: b, c"
    )
    assert ran == [("a",)] and share.steps == ["shared", "judged", "restored"]
    promoted = FakeShare("promoted")
    roll_out("inv.py", "site.py", ["a", "b", "c"], 1, 1, lambda _: None, promoted)
    assert ran[1:] == [("a",), ("b",), ("c",)], "judged once, on the first batch alone"
    assert promoted.steps == ["shared", "judged", "restored"]


def test_a_deploy_at_once_says_the_edges_canary_is_not_judged(tmp_path, monkeypatch):
    from llmhost.cli import deploy

    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        'serving = [("gpu-a", {"model_name": "m"})]\n'
        'edge = [("edge-a", {"edge_canary_percent": 10})]\n'
    )
    monkeypatch.setattr(deploy, "_checked_hosts", lambda inventory, limit: ["gpu-a", "edge-a"])
    ran: list[list[str]] = []
    monkeypatch.setattr(deploy.os, "execv", lambda path, argv: ran.append(argv))
    result = invoke("deploy", str(inventory), "--yes")
    assert result.exit_code == 0, result.output
    assert "note: edge-a judge a canary (edge_canary_percent) only in a rolling deploy" in (
        result.output
    )
    assert ran and ran[0][-1] == "--yes"


def test_deploy_reports_a_stopped_rollout_as_a_failure(batches_run, monkeypatch):
    from llmhost.cli import deploy

    monkeypatch.setattr(deploy, "_checked_hosts", lambda inventory, limit: ["a", "b", "c"])
    # No edge takes a percentage canary (inv.py is not read): tests/unit/test_canary.py and
    # the edge's e2e test have one.
    monkeypatch.setattr("llmhost.canary.Canary.planned", lambda *_: None)
    result = invoke("deploy", "inv.py", "--batch-size", "1", "--yes")
    assert result.exit_code == 1
    assert "rollout in 3 batch(es): 1: a; 2: b; 3: c" in result.output
    assert "batch 1/3: done (3 changes)" in result.output
    assert "error: batch 2 failed; rollout stopped. Not touched: c." in result.output
    assert batches_run == [("a",), ("b",)]


# -- soak orchestration ----------------------------------------------------------------------


@pytest.fixture
def fake_load(monkeypatch):
    """The load functions replaced: the probe answers; four requests, the third fails."""
    probes: list[str] = []

    async def one_request(target, prompt, max_tokens):
        probes.append(prompt)
        return load.Sample(start=0, ok=True, ttft=0.01, e2e=0.02, tokens=max_tokens)

    async def run_load(target, prompts, *, requests, samples, max_tokens, **_):
        for number in range(requests):
            await asyncio.sleep(0.02)
            ok = number != 2
            samples.append(load.Sample(start=number, ok=ok, ttft=0.01, e2e=0.02, tokens=4))
        return 2.0

    monkeypatch.setattr(load, "one_request", one_request)
    monkeypatch.setattr(load, "run_load", run_load)
    monkeypatch.setattr(soakrun, "PROGRESS_INTERVAL_S", 0.005)
    return probes


def soak_plan(**gates: float) -> soakrun.SoakPlan:
    return soakrun.SoakPlan(
        target=load.Target("http://127.0.0.1:9", "m"),
        prompts=["first", "second"],
        gates=load.Gates(**gates),
        concurrency=2,
        rate_per_s=None,
        requests=4,
        max_tokens=4,
        duration_s=None,
    )


def test_a_soak_reports_progress_live_and_ends_with_the_final_count(fake_load):
    seen: list[soakrun.SoakProgress] = []
    outcome = soakrun.run_soak(soak_plan(), seen.append)
    assert fake_load == ["first"]  # the probe went first, with the first prompt
    done = [p.done for p in seen]
    assert done == sorted(done) and len(set(done)) > 1  # counted while the load ran
    assert [p.finished for p in seen] == [False] * (len(seen) - 1) + [True]
    assert (seen[-1].done, seen[-1].failed) == (4, 1)
    assert outcome.document["load"] == {
        "mode": "closed",
        "concurrency": 2,
        "requests": 4,
        "duration_s": None,
        "max_tokens": 4,
    }
    assert outcome.passed and len(outcome.samples) == 4


def test_a_soak_judges_by_its_gates_and_the_cli_prints_the_progress_line(fake_load):
    failed = soakrun.run_soak(soak_plan(error_rate_max=0.01), lambda progress: None)
    assert not failed.passed and "error rate" in failed.document["failures"][0]
    result = invoke("soak", "http://127.0.0.1:9", "--model", "m", "--requests", "4")
    assert result.exit_code == 0, result.output
    assert "\rsoak: 4 done, 1 failed\n" in result.output
    assert json.loads(result.output[result.output.index("{") :])["passed"]


def test_a_soak_with_nothing_answering_cannot_run(monkeypatch):
    async def refused(target, prompt, max_tokens):
        return load.Sample(start=0, error="connection")

    async def must_not_run(*args, **kwargs):
        raise AssertionError("the load ran after a failed probe")

    monkeypatch.setattr(load, "one_request", refused)
    monkeypatch.setattr(load, "run_load", must_not_run)
    with pytest.raises(soakrun.NothingAnswers, match="nothing usable answers at http://h:1"):
        soakrun.run_soak(
            soakrun.SoakPlan(
                load.Target("http://h:1", "m"), ["x"], load.Gates(), 1, None, 1, 1, None
            ),
            lambda progress: None,
        )
    result = invoke("soak", "http://h:1", "--model", "m")
    assert (result.exit_code, result.output) == (
        2,
        "error: nothing usable answers at http://h:1: connection\n",
    )
