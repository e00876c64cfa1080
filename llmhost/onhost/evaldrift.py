"""The production eval: the active colour answers its model's eval set, scored as at its gate.

Runs on serving hosts from a timer (``llmhost-eval-drift.service``) as
``python3 onhost.pyz eval-drift --ports blue=8001,green=8002``: standard library only.

1. ``state.json`` names the active colour and its release (nothing serves: nothing to do).
2. The eval set the deploy wrote (``layout.EVAL_SET_FILE``) is answered by that colour's
   engine on loopback with the gate's own requests (``runtimectl.generate``: one at a
   time, temperature 0), and scored with the gate's own checks (``evalcheck``).
3. The answers are compared with those the gate recorded for this release on this host
   (``GATES_DIR/<release>/``: ``eval-items.json`` the prompts, ``result.json`` the answers).
4. The metrics go to node exporter's textfile collector, replaced atomically (a new file
   renamed over the old), with the run's details beside them (``last-run.json``).

What is counted, per release and colour:

- ``llmhost_eval_score``: the share of the eval set's checks the answers pass (0..1).
- ``llmhost_eval_compared_cases``: items the gate answered with the same prompt and
  token budget (an item added or edited since the gate is scored, not compared).
- ``llmhost_eval_drift_cases``: compared items whose answer is not, character for
  character, the answer the gate recorded. Absent when the gate recorded no answers
  (a release cut over with the gate off). The same release at temperature 0 should give
  the same tokens; an engine batching live traffic may still change a few.
- ``llmhost_eval_regressed_cases``: drifted items whose gate answer passes the check and
  whose answer now fails it (the drift that lowers the score).
- ``llmhost_eval_last_run_timestamp_seconds``: when the last complete run ended.

``llmhost_eval_up`` is 1 after a complete run (or when nothing serves), 0 when the run
failed, with ``llmhost_eval_up_reason{reason}``; the last complete run's series are kept,
so a failed run never hides a low score. ``llmhost_eval_tolerance`` carries the host's
``monitoring_eval_tolerance`` to the alert that compares the score with the gate's.

Exit codes: 0 done (or nothing serves), 1 the eval failed (metrics say why), 2 cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmhost.onhost import evalcheck, layout, runtimectl
from llmhost.onhost.layout import COLOURS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2
LAST_RUN = "last-run.json"


class EvalFailed(Exception):
    """The run could not score the active colour; ``reason`` is the metric's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# -- inputs ------------------------------------------------------------------------------------


def load_eval_set(path: Path) -> list[dict[str, Any]]:
    """The items of the deploy's eval set file, each checked for what the run needs."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EvalFailed("eval set unreadable", f"{path}: {error}") from error
    if not isinstance(document, dict):
        document = {}
    items = document.get("items")
    if document.get("version") != 1 or not isinstance(items, list) or not items:
        raise EvalFailed("eval set invalid", f"{path}: not a version 1 eval set with items")
    for item in items:
        check = item.get("check") if isinstance(item, dict) else None
        if not (
            isinstance(item, dict)
            and isinstance(item.get("id"), str)
            and isinstance(item.get("prompt"), str)
            and isinstance(item.get("max_tokens"), int)
            and isinstance(check, dict)
            and len(check) == 1
            and next(iter(check)) in evalcheck.CHECK_KINDS
        ):
            raise EvalFailed("eval set invalid", f"{path}: item {str(item)[:120]} is not one")
    return items


def active_release(state_path: Path) -> tuple[str, dict[str, Any]] | None:
    """(active colour, its release) from the state file; None when nothing serves."""
    try:
        state = runtimectl.read_state(state_path)
    except (OSError, ValueError) as error:
        raise EvalFailed("state unreadable", f"{state_path}: {error}") from error
    active = state.get("active")
    if active not in COLOURS:
        return None
    release = (state.get("colours") or {}).get(active) or {}
    if not isinstance(release.get("id"), str) or not (
        release.get("served_model_name") or release.get("model")
    ):
        raise EvalFailed("state invalid", f"{state_path} records no release on {active}")
    return active, release


def gate_answers(gates_dir: Path, release: str) -> dict[str, dict[str, Any]] | None:
    """id -> {prompt, max_tokens, answer} as the gate of ``release`` asked and got them on
    this host; None when it recorded none (no gate ran, or no eval set then)."""
    if "/" in release or release.startswith("."):
        return None
    directory = gates_dir / release
    try:
        items = json.loads((directory / "eval-items.json").read_text())
        result = json.loads((directory / "result.json").read_text())
    except (OSError, ValueError):
        return None
    evaluation = result.get("eval") if isinstance(result, dict) else None
    answers = evaluation.get("answers") if isinstance(evaluation, dict) else None
    if not isinstance(items, list) or not isinstance(answers, dict):
        return None
    return {
        item["id"]: {**item, "answer": answers[item["id"]]}
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and isinstance(answers.get(item["id"]), str)
    }


def answers_of(port: int, model: str, items: list[dict[str, Any]], timeout: float) -> dict:
    """The engine's answers, asked exactly as the gate asks them."""
    try:
        answers = runtimectl.generate(f"http://127.0.0.1:{port}", model, items, timeout)
    except OSError as error:
        if isinstance(error, TimeoutError) or isinstance(
            getattr(error, "reason", None), TimeoutError
        ):
            detail = f"port {port}: no answer within {timeout:g} s"
            raise EvalFailed("engine timeout", detail) from error
        raise EvalFailed("engine unreachable", f"port {port}: {error}") from error
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as error:
        raise EvalFailed("engine error", f"port {port}: {error}") from error
    wrong = [key for key, text in answers.items() if not isinstance(text, str)]
    if wrong:
        raise EvalFailed("engine error", f"port {port}: no text for {wrong[0]!r}")
    return answers


# -- judging -----------------------------------------------------------------------------------


def judge(
    items: list[dict[str, Any]],
    answers: dict[str, str],
    recorded: dict[str, dict[str, Any]] | None,
    regex_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Score, and compare with the gate's answers: the counts the metrics carry, and each
    item's verdict (for ``last-run.json`` and the journal)."""
    results = []
    for item in items:
        kind, expected = next(iter(item["check"].items()))
        answer = answers[item["id"]]
        reason = evalcheck.check_answer(kind, expected, answer, regex_timeout_s)
        result: dict[str, Any] = {"id": item["id"], "passed": reason is None, "answer": answer}
        if reason is not None:
            result["reason"] = reason
        gate = (recorded or {}).get(item["id"])
        if gate and (gate.get("prompt"), gate.get("max_tokens")) == (
            item["prompt"],
            item["max_tokens"],
        ):
            result["drifted"] = answer != gate["answer"]
            result["regressed"] = bool(
                result["drifted"]
                and reason is not None
                and evalcheck.check_answer(kind, expected, gate["answer"], regex_timeout_s) is None
            )
            if result["drifted"]:
                result["gate_answer"] = gate["answer"]
        results.append(result)
    compared = [r for r in results if "drifted" in r]
    return {
        "score": sum(r["passed"] for r in results) / len(results),
        "cases": len(results),
        "compared": len(compared),
        "drift": None if recorded is None else sum(r["drifted"] for r in compared),
        "regressed": None if recorded is None else sum(r["regressed"] for r in compared),
        "results": results,
    }


# -- metrics -------------------------------------------------------------------------------------

_HELP = {
    "llmhost_eval_up": "1 when the last production eval ran (or nothing serves); 0 when it "
    "failed (llmhost_eval_up_reason says why).",
    "llmhost_eval_up_reason": "Why llmhost_eval_up is 0: 1 for the current reason.",
    "llmhost_eval_tolerance": "How far below its gated eval score a release may score in "
    "production before the EvalScoreBelowGate alert (monitoring_eval_tolerance).",
    "llmhost_eval_score": "Share of the eval set's checks the active colour's answers passed "
    "at the last complete production eval (0..1).",
    "llmhost_eval_cases": "Items of the eval set the last production eval scored.",
    "llmhost_eval_compared_cases": "Items the gate answered with the same prompt and token "
    "budget, whose answers were compared with the gate's.",
    "llmhost_eval_drift_cases": "Compared items whose answer differs from the answer the gate "
    "recorded for this release.",
    "llmhost_eval_regressed_cases": "Drifted items that passed their check at the gate and "
    "fail it now.",
    "llmhost_eval_last_run_timestamp_seconds": "When the last complete production eval ended "
    "(Unix time).",
    "llmhost_eval_duration_seconds": "How long the last complete production eval took.",
}
_SERIES = (
    ("llmhost_eval_score", "score"),
    ("llmhost_eval_cases", "cases"),
    ("llmhost_eval_compared_cases", "compared"),
    ("llmhost_eval_drift_cases", "drift"),
    ("llmhost_eval_regressed_cases", "regressed"),
    ("llmhost_eval_last_run_timestamp_seconds", "finished"),
    ("llmhost_eval_duration_seconds", "duration_s"),
)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Counts as integers, the rest at full precision (a timestamp must keep its seconds)."""
    return str(value) if isinstance(value, int) else repr(float(value))


def _family(name: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *samples]


def metrics_text(last: dict[str, Any] | None, failure: str | None, tolerance: float) -> str:
    """The textfile: whether the run worked, the tolerance, and the last complete run's
    series (``last``: its release, colour and counts; None before the first)."""
    lines = _family("llmhost_eval_up", [f"llmhost_eval_up {0 if failure else 1}"])
    if failure:
        reason = f'llmhost_eval_up_reason{{reason="{_label(failure)}"}} 1'
        lines += _family("llmhost_eval_up_reason", [reason])
    lines += _family("llmhost_eval_tolerance", [f"llmhost_eval_tolerance {_number(tolerance)}"])
    if last is not None:
        labels = f'release="{_label(last["release"])}",colour="{_label(last["colour"])}"'
        for name, key in _SERIES:
            if last.get(key) is not None:
                lines += _family(name, [f"{name}{{{labels}}} {_number(last[key])}"])
    return "\n".join(lines) + "\n"


def replace_file(path: Path, text: str) -> None:
    """Write beside ``path`` and rename over it: a reader sees the old file or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(temporary, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def previous_run(out_dir: Path) -> dict[str, Any] | None:
    try:
        last = json.loads((out_dir / LAST_RUN).read_text())
    except (OSError, ValueError):
        return None
    fine = isinstance(last, dict) and all(k in last for k in ("release", "colour", "score"))
    return last if fine else None


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, ports: dict[str, int]) -> int:
    started = time.time()
    out_dir: Path = args.out_dir
    try:
        serving = active_release(args.state)
        if serving is None:
            replace_file(
                out_dir / layout.EVAL_METRICS_NAME, metrics_text(None, None, args.tolerance)
            )
            print("no colour is active: nothing serves, nothing to evaluate")
            return EXIT_OK
        colour, release = serving
        items = load_eval_set(args.eval_set)
        model = release.get("served_model_name") or release["model"]
        answers = answers_of(ports[colour], model, items, args.timeout)
        outcome = judge(items, answers, gate_answers(args.gates, release["id"]))
    except EvalFailed as failed:
        last = previous_run(out_dir)
        replace_file(
            out_dir / layout.EVAL_METRICS_NAME, metrics_text(last, failed.reason, args.tolerance)
        )
        print(f"eval-drift: {failed}", file=sys.stderr)
        return EXIT_FAILED
    finished = time.time()
    last = {
        "release": release["id"],
        "colour": colour,
        **outcome,
        "finished": finished,
        "duration_s": finished - started,
    }
    replace_file(out_dir / LAST_RUN, json.dumps(last, indent=1, sort_keys=True) + "\n")
    replace_file(out_dir / layout.EVAL_METRICS_NAME, metrics_text(last, None, args.tolerance))
    summary = {key: last[key] for key in ("release", "colour", "score", "cases", "compared")}
    summary |= {
        "failed": [r["id"] for r in outcome["results"] if not r["passed"]],
        "drifted": [r["id"] for r in outcome["results"] if r.get("drifted")],
        "regressed": [r["id"] for r in outcome["results"] if r.get("regressed")],
    }
    print(json.dumps(summary, sort_keys=True))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz eval-drift",
        description="the active colour answers its eval set; score and drift for node exporter",
    )
    parser.add_argument("--ports", required=True, help="blue=PORT,green=PORT (the engines)")
    parser.add_argument("--state", type=Path, default=Path(layout.STATE_FILE))
    parser.add_argument("--eval-set", type=Path, default=Path(layout.EVAL_SET_FILE))
    parser.add_argument("--gates", type=Path, default=Path(layout.GATES_DIR))
    parser.add_argument(
        "--out-dir", type=Path, default=Path(layout.EVAL_DIR), help="metrics and last run"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per answer, seconds")
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="exported for the score alert"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ports = runtimectl.parse_ports(args.ports)
    if ports is None:
        return EXIT_CANNOT_RUN
    try:
        return run(args, ports)
    except OSError as error:
        print(f"eval-drift: cannot write the metrics in {args.out_dir}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
