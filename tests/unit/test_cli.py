"""The CLI's help, version, documentation and input checks (no host is contacted)."""

import subprocess
import sys
from types import SimpleNamespace

from click.testing import CliRunner

from llmhost import __version__
from llmhost.cli import main
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
    assert result.exit_code == 2
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
    assert result.exit_code == 2
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
    from llmhost.cli import rollout_batches

    names = [f"h{i}" for i in range(1, 7)]
    assert rollout_batches(names, 2, 1) == [["h1"], ["h2", "h3"], ["h4", "h5"], ["h6"]]
    assert rollout_batches(names, 5, 2) == [["h1", "h2"], ["h3", "h4", "h5", "h6"]]
    assert rollout_batches(["h1"], 3, 1) == [["h1"]]
