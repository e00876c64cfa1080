"""The gate itself: one step of the deploy that runs on the control machine.

The load must come from next to the runtime (the staged colour listens on loopback
only), so the soak runs on the host; everything that needs the repository (the eval
checks, the golden sets) or a library (JSON Schema) runs here. Every outcome, a
failure to run included, ends as a recorded verdict: the `gate-check` step after
this one reads it, and it alone decides whether the host goes on to cutover.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host

from llmhost import evalset
from llmhost.onhost.soak import Gates, Sample, evaluate, sample_from, summarise
from llmhost.paths import REPO_ROOT
from llmhost.soakreport import result_document, write_reports
from roles._common.onhost import onhost_command, runtimectl
from roles.gate.defaults import GATES_DIR, SOAK_LIMITS, GateSettings

# How much longer than its own deadline the soak may take before the gate gives up on it:
# in-flight requests end within one request timeout of the soak's duration.
SLACK_S = 30


@dataclass(frozen=True)
class GateRun:
    host: str
    colour: str
    port: int
    release: dict[str, Any]  # the release summary, with its arguments
    served_model: str
    model: str
    models_dir: Path  # where the catalog (and its golden sets) lives
    replaced: str | None  # the release id the active colour runs
    settings: GateSettings
    limits: dict[str, float]
    eval_set: evalset.EvalSet | None
    prompts: tuple[str, ...]

    @property
    def release_id(self) -> str:
        return str(self.release["id"])

    @property
    def host_dir(self) -> str:
        return f"{GATES_DIR}/{self.release_id}"


def control_reports_dir() -> Path:
    """Where the control machine keeps every gate's reports (LLMHOST_GATES_DIR overrides)."""
    return Path(os.environ.get("LLMHOST_GATES_DIR", REPO_ROOT / "gates"))


class GateCouldNotRun(Exception):
    pass


def run_gate(run: GateRun) -> None:
    """Soak, eval, reports, verdict. Raises only when the verdict cannot be recorded."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    control_dir = control_reports_dir() / run.host / run.release_id
    where = {"report": f"{run.host_dir}/report.html", "control_report": str(control_dir)}
    gates = Gates(**{k: v for k, v in run.limits.items() if k in SOAK_LIMITS})
    shell(f"install -d -m 0755 {shlex.quote(run.host_dir)}")
    samples, summary, evaluation, failures = measure(run, gates)
    document = result_document(
        target={"url": f"http://127.0.0.1:{run.port}", "model": run.served_model},
        load=load_description(run.settings, len(samples)),
        summary=summary,
        gates=gates,
        failures=failures,
        gate={"host": run.host, "colour": run.colour, "release": run.release_id,
              "time": started, **where},
        evaluation=evaluation,
    )  # fmt: skip
    write_reports(control_dir, document, samples)
    for name in ("result.json", "report.html"):
        upload((control_dir / name).read_text(), f"{run.host_dir}/{name}")
    verdict = {
        "release": run.release_id,
        "colour": run.colour,
        "passed": not failures,
        "failures": failures,
        "time": started,
        "eval_score": evaluation["score"] if evaluation else None,
        "drift": len(evaluation["drift"]) if evaluation else 0,
        **where,
    }
    upload(json.dumps(verdict), f"{run.host_dir}/verdict.json")
    verdict_file = f"{run.host_dir}/verdict.json"
    shell(runtimectl("gate-record", "--colour", run.colour, "--verdict", verdict_file))
    if not failures and evaluation is not None:
        record_golden(run, evaluation, started)


def measure(
    run: GateRun, gates: Gates
) -> tuple[list[Sample], dict[str, Any], dict[str, Any] | None, list[str]]:
    """(samples, soak summary, eval outcome, failures); a gate that cannot run has failed."""
    samples: list[Sample] = []
    summary = summarise([], 0.0)
    evaluation = None
    failures: list[str] = []
    try:
        duration, samples = soak_on_host(run)
        summary = summarise(samples, duration)
        failures += evaluate(summary, gates)
        if run.eval_set is not None:
            evaluation, eval_failures = evaluate_on_host(run, run.eval_set)
            failures += eval_failures
    except GateCouldNotRun as error:
        failures.append(f"the gate could not run: {error}")
    return samples, summary, evaluation, failures


# -- on the host -------------------------------------------------------------------------------


def shell(command: str, timeout: float | None = None) -> str:
    """Run ``command`` on the host; its stdout, or GateCouldNotRun with its stderr.

    With a timeout, the host kills the command itself too (coreutils `timeout`), so
    a hung soak never outlives the gate that gave up on it.
    """
    if timeout is not None:
        command = f"timeout -k 5 {int(timeout)} {command}"
    try:
        ok, output = host.run_shell_command(
            command, _timeout=None if timeout is None else int(timeout) + 15
        )
    except TimeoutError as error:
        raise GateCouldNotRun(f"no answer within {timeout:.0f} s from `{command[:120]}`") from error
    if not ok:
        raise GateCouldNotRun(f"`{command[:120]}` failed: {output.stderr[-800:]}")
    return output.stdout


def upload(text: str, path: str) -> None:
    if not host.put_file(StringIO(text), path):
        raise GateCouldNotRun(f"could not write {path}")


def soak_on_host(run: GateRun) -> tuple[float, list[Sample]]:
    settings = run.settings
    upload(json.dumps(list(run.prompts)), f"{run.host_dir}/prompts.json")
    arguments = [
        "--url", f"http://127.0.0.1:{run.port}",
        "--model", run.served_model,
        "--concurrency", str(settings.gate_concurrency),
        "--requests", str(settings.gate_requests),
        "--duration", str(settings.gate_duration_s),
        "--max-tokens", str(settings.gate_max_tokens),
        "--timeout", str(settings.gate_request_timeout_s),
        "--prompts", f"{run.host_dir}/prompts.json",
    ]  # fmt: skip
    if settings.gate_rate_per_s:
        arguments += ["--rate", str(settings.gate_rate_per_s)]
    if "error_rate_max" in run.limits:
        arguments += ["--error-rate-max", str(run.limits["error_rate_max"])]
    command = onhost_command("soak", *arguments)
    limit = settings.gate_duration_s + settings.gate_request_timeout_s + SLACK_S
    try:
        raw = json.loads(shell(command, timeout=limit))
        return float(raw["duration_s"]), [sample_from(s) for s in raw["samples"]]
    except (ValueError, KeyError, TypeError) as error:
        raise GateCouldNotRun(f"the soak's output is not a result: {error}") from error


def evaluate_on_host(run: GateRun, eval_set: evalset.EvalSet) -> tuple[dict[str, Any], list[str]]:
    """The eval's outcome (for the result) and the gate failures it causes."""
    items = [{"id": i.id, "prompt": i.prompt, "max_tokens": i.max_tokens} for i in eval_set.items]
    upload(json.dumps(items), f"{run.host_dir}/eval-items.json")
    command = runtimectl(
        "generate",
        "--port", str(run.port),
        "--model", run.served_model,
        "--items", f"{run.host_dir}/eval-items.json",
        "--timeout", str(run.settings.gate_request_timeout_s),
    )  # fmt: skip
    limit = len(items) * run.settings.gate_request_timeout_s + SLACK_S
    try:
        answers = json.loads(shell(command, timeout=limit))
    except ValueError as error:
        raise GateCouldNotRun(f"the eval's answers are not JSON: {error}") from error
    return judge_eval(run, eval_set, answers)


# -- judging, here ---------------------------------------------------------------------------


def judge_eval(
    run: GateRun, eval_set: evalset.EvalSet, answers: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Score against the baseline (the replaced release's) and answers against the golden set."""
    score, results = evalset.score(eval_set, answers)
    reference = evalset.reference_golden(run.models_dir, run.model, run.release_id, run.replaced)
    comparable = reference is not None and reference.get("eval_set_sha256") == eval_set.sha256
    baseline = float(reference["score"]) if reference and comparable else None
    drift = evalset.drift(reference, eval_set, answers) if reference else []
    outcome: dict[str, Any] = {
        "eval_set": str(eval_set.path),
        "score": score,
        "baseline": baseline,
        "golden": (reference.get("release") or {}).get("id") if reference else None,
        "changed": evalset.what_changed(reference, run.release) if reference else [],
        "results": results,
        "drift": drift,
        "answers": answers,
    }
    failures = []
    tolerance = run.limits.get("eval_tolerance", 0.0)
    if baseline is not None and score < baseline - tolerance:
        failures.append(f"eval score {score:.3f} < baseline {baseline:.3f} - {tolerance}")
    floor = run.limits.get("eval_min_score")
    if floor is not None and score < floor:
        failures.append(f"eval score {score:.3f} < eval_min_score {floor}")
    if drift and run.settings.gate_fail_on_drift:
        failures.append(f"{len(drift)} eval answers drifted from golden set {outcome['golden']}")
    return outcome, failures


def record_golden(run: GateRun, evaluation: dict[str, Any], recorded: str) -> None:
    """This release's answers become its golden set, unless it has one (never overwritten)."""
    assert run.eval_set is not None
    path = evalset.golden_path(run.models_dir, run.model, run.release_id)
    if path.exists():
        return
    document = evalset.golden_document(
        release=run.release,
        eval_set=run.eval_set,
        eval_score=evaluation["score"],
        answers=evaluation["answers"],
        recorded=recorded,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def load_description(settings: GateSettings, sent: int) -> dict[str, Any]:
    mode: dict[str, Any] = (
        {"mode": "open", "rate_per_s": settings.gate_rate_per_s}
        if settings.gate_rate_per_s
        else {"mode": "closed", "concurrency": settings.gate_concurrency}
    )
    return {
        **mode,
        "requests": sent,
        "duration_s": settings.gate_duration_s,
        "max_tokens": settings.gate_max_tokens,
    }
