"""`llmhost soak`: streaming load on an endpoint and a machine-readable pass/fail verdict.

The run itself (probe, load, verdict, result document) is `llmhost.soakrun`;
this command reads the arguments, prints progress and the JSON result, and
maps the verdict onto the validators' exit codes (0 pass, 1 fail, 2 cannot run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmhost.cli.errors import LlmhostError
from llmhost.messages import json_lines, say

if TYPE_CHECKING:
    from llmhost.soakrun import SoakProgress


def _gate_values(pairs: tuple[str, ...]) -> dict[str, float]:
    """--gate NAME=VALUE pairs as `Gates` keyword arguments; a typo is an input error."""
    from llmhost.catalog import gate_limit_problem
    from llmhost.onhost.soak import Gates

    known = {name for name in Gates.__dataclass_fields__}
    values = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in known:
            raise LlmhostError(
                f"--gate {pair}: unknown gate; use one of {', '.join(sorted(known))}"
            )
        try:
            values[name] = float(raw)
        except ValueError as error:
            raise LlmhostError(f"--gate {pair}: {raw!r} is not a number") from error
        problem = gate_limit_problem(name, values[name])
        if problem:
            raise LlmhostError(f"--gate {pair}: {problem[0]}. Fix: {problem[1]}")
    return values


def _prompt_mix(prompts: str | None) -> list[str]:
    """The non-blank lines of the --prompts file; one short prompt without one."""
    lines = Path(prompts).read_text().splitlines() if prompts else ["Hello"]
    return [line for line in lines if line.strip()] or ["Hello"]


def _echo_progress(progress: SoakProgress) -> None:
    """One line on stderr, rewritten in place, ended when the load is done (JSON: one line,
    at the end)."""
    if json_lines():
        if progress.finished:
            say("soak: load done", done=progress.done, failed=progress.failed)
        return
    click.echo(
        f"\rsoak: {progress.done} done, {progress.failed} failed",
        err=True,
        nl=progress.finished,
    )


@click.command()
@click.argument("url")
@click.option("--model", required=True, help="Served model name to request.")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File holding the API key (never pass a key on the command line).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="CA certificate for an https URL (e.g. the llmhost CA).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Closed loop: clients, each sending when its last answer ends.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Open loop instead: requests per second, Poisson arrivals.",
)
@click.option(
    "--requests",
    "count",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Requests to send (at most, with --duration).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop sending after this many seconds.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False, exists=True),
    help="Prompt mix: one prompt per line (default: one short prompt).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a request may take before it counts as failed.",
)
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="NAME=VALUE",
    help="ttft_p95_ms, e2e_p99_ms, error_rate_max, min_tokens_per_s (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write result.json and report.html (plots) here.",
)
def soak(
    url: str,
    model: str,
    key_file: str | None,
    ca_file: str | None,
    concurrency: int,
    rate: float | None,
    count: int,
    duration: float | None,
    max_tokens: int,
    prompts: str | None,
    timeout: float,
    gates: tuple[str, ...],
    out: Path | None,
) -> None:
    """Streaming load on URL (OpenAI-compatible) and a pass/fail verdict on its gates.

    \b
    Prints the JSON result; exit 0 pass, 1 fail, 2 could not run (bad arguments,
    nothing answering at URL). An error-rate gate also needs enough requests to
    back it: 0 errors in n bounds the rate at about 3/n.
    llmhost soak https://gpu-lon-1:8000 --model llama-8b --key-file team.key \\
        --ca-file inventories/secrets/ca/ca.crt --gate ttft_p95_ms=800 \\
        --gate error_rate_max=0.01 --requests 400 --out reports/
    """
    from llmhost.onhost.soak import Gates, Target
    from llmhost.soakreport import write_reports
    from llmhost.soakrun import NothingAnswers, SoakPlan, run_soak

    gate = Gates(**_gate_values(gates))
    api_key = Path(key_file).read_text().strip() if key_file else None
    plan = SoakPlan(
        target=Target(url=url, model=model, api_key=api_key, ca_file=ca_file, timeout_s=timeout),
        prompts=_prompt_mix(prompts),
        gates=gate,
        concurrency=concurrency,
        rate_per_s=rate,
        requests=count,
        max_tokens=max_tokens,
        duration_s=duration,
    )
    try:
        outcome = run_soak(plan, _echo_progress)
    except NothingAnswers as error:
        raise LlmhostError(str(error)) from error
    if out:
        write_reports(out, outcome.document, outcome.samples)
        say(f"reports: {out / 'result.json'}, {out / 'report.html'}")
    click.echo(json.dumps(outcome.document, indent=2, sort_keys=True))
    if not outcome.passed:
        sys.exit(1)
