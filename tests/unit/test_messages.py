"""`--log-format json`: every message on stderr one JSON object, pyinfra's output included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from llmhost import messages
from llmhost.cli import main
from llmhost.paths import REPO_ROOT


@pytest.fixture(autouse=True)
def text_again():
    yield
    messages.use_format("text")


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_text_messages_are_plain_with_the_level_as_a_prefix(capsys):
    messages.say("converged: 3 operation(s) changed")
    messages.warn("no monitoring group")
    messages.error("host h1: bad")
    assert capsys.readouterr().err == (
        "converged: 3 operation(s) changed\nwarning: no monitoring group\nerror: host h1: bad\n"
    )


def test_json_messages_have_time_level_message_and_their_fields(capsys):
    messages.use_format("json")
    messages.say("batch 1/2: tb1", batch=1)
    messages.error("bad region", host="h1", key="region", fix="use gb-lon", unused=None)
    first, second = lines(capsys.readouterr().err)
    assert first["level"] == "info" and first["message"] == "batch 1/2: tb1"
    assert first["batch"] == 1 and first["time"].endswith("+00:00")
    assert {k: second[k] for k in ("level", "host", "key", "fix")} == {
        "level": "error",
        "host": "h1",
        "key": "region",
        "fix": "use gb-lon",
    }
    assert "unused" not in second, "unknown fields are left out, not null"


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="not one of text, json"):
        messages.use_format("xml")


def test_a_childs_stderr_is_relayed_line_by_line_and_kept(capsys):
    messages.use_format("json")
    code, out, err = messages.run_relayed(
        [sys.executable, "-c", "import sys; print('result'); sys.stderr.write('a\\n\\nb\\n')"],
        "pyinfra",
    )
    assert (code, out, err) == (0, "result\n", "a\n\nb\n")
    relayed = lines(capsys.readouterr().err)
    assert [(r["source"], r["message"]) for r in relayed] == [("pyinfra", "a"), ("pyinfra", "b")]


def test_a_config_error_under_json_keeps_host_key_and_fix_apart():
    from llmhost.errors import ConfigError
    from tests.unit.test_cli import failing_group

    bad = ConfigError("'mars-1' is not a region", key="region", fix="use gb-lon", host="h1")
    group = failing_group(bad)
    group.params = main.params  # the real --log-format option
    group.callback = main.callback
    result = CliRunner().invoke(group, ["--log-format", "json", "boom"])
    assert result.exit_code == 2
    (entry,) = lines(result.output)
    assert entry["level"] == "error"
    assert (entry["host"], entry["key"], entry["fix"]) == ("h1", "region", "use gb-lon")
    assert entry["message"].startswith("host h1: key `region`: 'mars-1' is not a region")


def test_the_real_cli_reports_a_bad_inventory_as_json_lines(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text('web = [("w1", {"region": "us-east-1", "hardware": "cpu"})]\n')
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "--log-format", "json", "check", str(inventory)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    found = lines(done.stderr)
    assert found and all(entry["level"] in ("error", "warning", "info") for entry in found)
    assert any("key `region`" in entry["message"] for entry in found)


def test_the_format_can_come_from_the_environment(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text('web = [("w1", {"region": "us-east-1", "hardware": "cpu"})]\n')
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "check", str(inventory)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "LLMHOST_LOG_FORMAT": "json"},
    )
    assert done.returncode == 1
    assert "error" in {entry["level"] for entry in lines(done.stderr)}
