"""Run pyinfra deploys from the control machine and read their results.

This is what ``llmhost deploy`` and ``llmhost demo`` do, and what the end-to-end
tests use, so the command a person runs is the command that is tested. A rolling
rollout (`roll_out`) is a sequence of such runs, one per batch of hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from llmhost.messages import run_relayed
from llmhost.paths import REPO_ROOT

SITE = "deploy/site.py"
ROLLBACK = "deploy/rollback.py"


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None

    @property
    def totals(self) -> dict[str, int]:
        """pyinfra's result totals; a run without results counts as failed, never as clean."""
        if not self.report or not self.report.get("results"):
            raise RuntimeError(
                f"pyinfra printed no results (exit {self.returncode}): {self.stderr[-2000:]}"
            )
        totals: dict[str, int] = self.report["results"]["totals"]
        return totals

    @property
    def changes(self) -> int:
        """Operations that changed something, summed over hosts."""
        return self.totals.get("success", 0)

    @property
    def errors(self) -> int:
        return self.totals.get("error", 0)

    def planned_changes(self) -> dict[str, list[str]]:
        """Operation name -> hosts it would change (a ``--dry`` run's plan)."""
        if not self.report:
            return {}
        return {
            op["name"]: op["hosts_with_change"]
            for op in self.report["plan"]
            if op["hosts_with_change"]
        }

    def changed_operations(self) -> list[str]:
        if not self.report or not self.report.get("results"):
            return []
        return [
            f"{op['name']} on {', '.join(op['success'])}"
            for op in self.report["results"]["operations"]
            if op["success"]
        ]

    def summary(self, named_up_to: int = 12) -> str:
        """How many operations changed, each named when there are few (as on a re-run)."""
        line = f"converged: {self.changes} operation(s) changed"
        changed = self.changed_operations()
        if not changed or len(changed) > named_up_to:
            return line
        return "\n  ".join([line, *changed])


def pyinfra_argv(
    inventory: str,
    deploy: str = SITE,
    *,
    limit: tuple[str, ...] = (),
    dry: bool = False,
    json_output: bool = False,
    yes: bool = True,
    data: dict[str, str] | None = None,
) -> list[str]:
    """pyinfra's command line; ``yes=False`` lets pyinfra show changes and ask first.

    ``data`` overrides host data on every host (pyinfra's ``--data key=value``).
    """
    argv = [sys.executable, "-m", "pyinfra", inventory, deploy]
    for key, value in (data or {}).items():
        argv += ["--data", f"{key}={value}"]
    for pattern in limit:
        argv += ["--limit", pattern]
    # --yes skips pyinfra's change detection, which is all a dry run is for.
    if dry:
        argv.append("--dry")
    elif yes:
        argv.append("--yes")
    if json_output:
        argv.append("--json")
    return argv


def run(
    inventory: str,
    deploy: str = SITE,
    *,
    limit: tuple[str, ...] = (),
    dry: bool = False,
    data: dict[str, str] | None = None,
    stream_stderr: bool = False,
) -> RunResult:
    """Run a deploy with ``--json``; stderr (pyinfra's human output) is kept, and streamed
    to ours as it comes when asked (as JSON lines under ``--log-format json``)."""
    argv = pyinfra_argv(inventory, deploy, limit=limit, dry=dry, json_output=True, data=data)
    if stream_stderr:
        code, stdout, stderr = run_relayed(argv, "pyinfra", cwd=REPO_ROOT)
    else:
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    return RunResult(code, stdout, stderr, parse_report(stdout))


def parse_report(stdout: str) -> dict[str, Any] | None:
    """pyinfra's ``--json`` report, or None where it printed none (a run that failed early)."""
    try:
        report: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    return report


# -- rolling rollouts -----------------------------------------------------------------------


class RolloutFailed(Exception):
    """A batch of a rollout failed; the message names the hosts left untouched."""


@dataclass(frozen=True)
class BatchProgress:
    """A rollout batch starting (``result`` None) or done (its run's result)."""

    number: int
    total: int
    hosts: list[str]
    result: RunResult | None = None


def rollout_batches(names: list[str], batch_size: int, canary: int) -> list[list[str]]:
    """The canary batch, then batches of ``batch_size``, in inventory order."""
    first, rest = names[:canary], names[canary:]
    return [first] + [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]


class Judged(Protocol):
    """A canary's verdict (llmhost.canary.Verdict)."""

    @property
    def decision(self) -> str: ...

    @property
    def reason(self) -> str: ...


class CanaryShare(Protocol):
    """A percentage canary (llmhost.canary.Canary): its share set on the edges while the
    first batch converges, the judge it yields called after."""

    def sharing(self) -> AbstractContextManager[Callable[[], Judged]]: ...


def roll_out(
    inventory: str,
    deploy: str,
    names: list[str],
    batch_size: int,
    canary: int,
    on_progress: Callable[[BatchProgress], None],
    share: CanaryShare | None = None,
) -> None:
    """Run ``deploy`` batch by batch; a batch with a failed host stops the rollout, and so
    does a canary (``share``: the first batch, judged behind the edges) not promoted.

    Stopping there is the point of batching: a bad release reaches the canary, not
    the fleet. A second rollout is safe because hosts already done change nothing.
    """
    batches = rollout_batches(names, batch_size, canary)
    for number, batch in enumerate(batches, 1):
        untouched = ", ".join(n for b in batches[number:] for n in b) or "none"
        on_progress(BatchProgress(number, len(batches), batch))
        sharing = share.sharing() if share is not None and number == 1 else nullcontext(None)
        with sharing as judge:
            result = run(inventory, deploy, limit=tuple(batch), stream_stderr=True)
            if result.returncode != 0 or result.errors:
                raise RolloutFailed(
                    f"batch {number} failed; rollout stopped. Not touched: {untouched}. Fix "
                    "the failure, then deploy again (hosts already done change nothing)"
                )
            on_progress(BatchProgress(number, len(batches), batch, result))
            if judge is not None:
                verdict = judge()
                if verdict.decision != "promoted":
                    raise RolloutFailed(
                        f"canary {', '.join(batch)} {verdict.decision}: {verdict.reason}; "
                        f"rollout stopped. Not touched: {untouched}"
                    )
