"""Run pyinfra deploys from the control machine and read their results.

This is what ``llmhost deploy`` and ``llmhost demo`` do, and what the end-to-end
tests use, so the command a person runs is the command that is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from llmhost.paths import REPO_ROOT

SITE = "deploy/site.py"


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    @property
    def totals(self) -> dict[str, int]:
        if not self.report or not self.report.get("results"):
            return {}
        totals: dict[str, int] = self.report["results"]["totals"]
        return totals

    @property
    def changed(self) -> int:
        """Operations that changed something, summed over hosts."""
        return self.totals.get("success", 0)

    @property
    def errors(self) -> int:
        return self.totals.get("error", 0)

    def changed_operations(self) -> list[str]:
        if not self.report or not self.report.get("results"):
            return []
        return [
            f"{op['name']} on {', '.join(op['success'])}"
            for op in self.report["results"]["operations"]
            if op["success"]
        ]


def pyinfra_argv(
    inventory: str,
    deploy: str = SITE,
    *,
    limit: tuple[str, ...] = (),
    dry: bool = False,
    json_output: bool = False,
) -> list[str]:
    argv = [sys.executable, "-m", "pyinfra", inventory, deploy, "--yes"]
    for pattern in limit:
        argv += ["--limit", pattern]
    if dry:
        argv.append("--dry")
    if json_output:
        argv.append("--json")
    return argv


def run(
    inventory: str,
    deploy: str = SITE,
    *,
    limit: tuple[str, ...] = (),
    dry: bool = False,
    stream_stderr: bool = False,
) -> RunResult:
    """Run a deploy with ``--json``; stderr (pyinfra's human output) is kept or streamed."""
    completed = subprocess.run(
        pyinfra_argv(inventory, deploy, limit=limit, dry=dry, json_output=True),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=None if stream_stderr else subprocess.PIPE,
        text=True,
    )
    try:
        report = json.loads(completed.stdout) if completed.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return RunResult(completed.returncode, completed.stdout, completed.stderr or "", report)
