"""A soak run from the control machine: probe, load with live progress, verdict, document.

The load generator and its statistics are host-side (`llmhost.onhost.soak`,
standard library only, so a deploy's gate runs them next to the runtime). This
is what `llmhost soak` adds around them when a person points it at a URL: a
probe first, so a dead or refusing endpoint is "could not run" rather than a
gate failure; progress while the load runs; and the result document that
`llmhost.soakreport` defines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmhost.onhost import soak as load
from llmhost.soakreport import result_document

# Seconds between progress reports while the load runs.
PROGRESS_INTERVAL_S = 1.0


class NothingAnswers(Exception):
    """The probe found nothing usable at the URL (no connection, timeout, 4xx)."""


@dataclass(frozen=True)
class SoakPlan:
    """What to send, how, and the gates the result is judged by."""

    target: load.Target
    prompts: list[str]
    gates: load.Gates
    concurrency: int
    rate_per_s: float | None
    requests: int
    max_tokens: int
    duration_s: float | None

    def load_mode(self) -> dict[str, Any]:
        """The result's `load` block: open loop at a rate, or closed loop at a concurrency."""
        if self.rate_per_s:
            return {"mode": "open", "rate_per_s": self.rate_per_s}
        return {"mode": "closed", "concurrency": self.concurrency}


@dataclass(frozen=True)
class SoakProgress:
    """Requests answered so far and how many failed; ``finished`` on the last report."""

    done: int
    failed: int
    finished: bool


@dataclass(frozen=True)
class SoakOutcome:
    """The result document, and the samples behind it (the HTML report plots them)."""

    document: dict[str, Any]
    samples: list[load.Sample]

    @property
    def passed(self) -> bool:
        return bool(self.document["passed"])


def probe(target: load.Target, prompt: str) -> None:
    """One one-token request; raises `NothingAnswers` unless something usable answered.

    A 5xx or a bad stream still counts as usable: that is the runtime failing,
    which is what the gates are there to judge.
    """
    first = asyncio.run(load.one_request(target, prompt, 1))
    if first.error in ("connection", "timeout") or (first.error or "").startswith("http-4"):
        raise NothingAnswers(f"nothing usable answers at {target.url}: {first.error}")


def run_soak(plan: SoakPlan, on_progress: Callable[[SoakProgress], None]) -> SoakOutcome:
    """Probe, run the load (reporting progress about every second), judge it by the gates."""
    probe(plan.target, plan.prompts[0])
    samples: list[load.Sample] = []
    elapsed = asyncio.run(_load_with_progress(plan, samples, on_progress))
    summary = load.summarise(samples, elapsed)
    failures = load.evaluate(summary, plan.gates)
    document = result_document(
        target={"url": plan.target.url, "model": plan.target.model},
        load={
            **plan.load_mode(),
            "requests": len(samples),
            "duration_s": plan.duration_s,
            "max_tokens": plan.max_tokens,
        },
        summary=summary,
        gates=plan.gates,
        failures=failures,
    )
    return SoakOutcome(document, samples)


async def _load_with_progress(
    plan: SoakPlan, samples: list[load.Sample], on_progress: Callable[[SoakProgress], None]
) -> float:
    """`run_load`, watched: ``samples`` fills as answers arrive, so it can be counted live."""
    runner = load.run_load(
        plan.target,
        plan.prompts,
        concurrency=plan.concurrency,
        rate_per_s=plan.rate_per_s,
        requests=plan.requests,
        max_tokens=plan.max_tokens,
        duration_s=plan.duration_s,
        samples=samples,
    )
    task = asyncio.ensure_future(runner)
    while not task.done():
        await asyncio.wait([task], timeout=PROGRESS_INTERVAL_S)
        failed = sum(1 for s in samples if not s.ok)
        on_progress(SoakProgress(len(samples), failed, finished=task.done()))
    return await task
