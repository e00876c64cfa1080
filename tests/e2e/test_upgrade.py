"""Upgrading llmhost itself: hosts an earlier release converged take this one, then stay put.

    LLMHOST_UPGRADE_FROM=<git revision> ./scripts/test tests/e2e/test_upgrade.py

The earlier release is checked out into a temporary worktree and runs its own
`llmhost demo --hosts 2` on fresh testbed hosts (base, the registry, a model, llama-server,
the gate, the cutover: the whole path, with its own code). Then this checkout converges
the same hosts with the same data: no failure, a second run that changes nothing, the
same release still active, and each gateway still answering.

Skipped unless LLMHOST_UPGRADE_FROM is set: it needs the repository's history, and it
boots fresh hosts and converges them three times (about ten minutes on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmhost import converge
from llmhost.demo import DEMO_MODEL, ask_demo_model, demo_catalog
from llmhost.onhost.layout import STATE_FILE
from llmhost.paths import REPO_ROOT
from llmhost.testing.testbed import Testbed

pytestmark = pytest.mark.e2e

EARLIER = os.environ.get("LLMHOST_UPGRADE_FROM")


@pytest.fixture
def earlier_checkout(tmp_path: Path) -> Iterator[Path]:
    if not EARLIER:
        pytest.skip(
            "set LLMHOST_UPGRADE_FROM=<git revision> to converge with that release first "
            "(needs the git history; boots fresh hosts; about ten minutes)"
        )
    checkout = tmp_path / "earlier"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(checkout), EARLIER],
        check=True,
        capture_output=True,
    )
    try:
        yield checkout
    finally:
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(checkout)],
            check=False,
        )


def active_releases(testbed: Testbed) -> dict[str, str]:
    states = {h.name: json.loads(testbed.ssh(h, f"cat {STATE_FILE}")) for h in testbed.hosts()}
    return {name: state["colours"][state["active"]]["id"] for name, state in states.items()}


def test_hosts_converged_by_an_earlier_release_upgrade_and_then_change_nothing(
    earlier_checkout: Path, testbed: Testbed, monkeypatch: pytest.MonkeyPatch
):
    testbed.down()  # fresh hosts: nothing on them but what the earlier release puts there
    demo = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "demo", "--hosts", "2"],
        cwd=earlier_checkout,
        env={**os.environ, "PYTHONPATH": str(earlier_checkout)},
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr[-4000:]
    before = active_releases(testbed)

    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(demo_catalog(testbed)))
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(testbed.root / "runtime-builds.toml"))
    data = {"model_name": DEMO_MODEL}
    upgrade = converge.run("inventories/testbed.py", data=data)
    assert upgrade.returncode == 0 and upgrade.errors == 0, upgrade.stderr[-4000:]
    print(f"upgrade from {EARLIER}: {upgrade.changes} changes", *upgrade.changed_operations())
    again = converge.run("inventories/testbed.py", data=data)
    assert again.returncode == 0 and again.errors == 0, again.stderr[-4000:]
    assert again.changes == 0, again.changed_operations()

    assert active_releases(testbed) == before, "an upgrade of llmhost is not a new release"
    for host in testbed.hosts():
        assert "generated 8 tokens" in ask_demo_model(testbed, host)
