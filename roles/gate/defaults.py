"""Public settings of the gate role: the soak and eval a staged release must pass first.

The limits themselves belong to the model and the hardware class (the model file's
`[gates]` and `[gates.<class>]` tables); `gate_limits` overrides them for one host.
"""

from __future__ import annotations

from dataclasses import dataclass

# GATES_DIR: one directory per release on the host (result.json, report.html), which the
# production eval reads the gate's answers from.
from llmhost.onhost.layout import GATES_DIR as GATES_DIR
from llmhost.settings import setting

# Of the limits a model file may set (llmhost.catalog.GATE_LIMITS), those the soak judges.
SOAK_LIMITS = ("ttft_p95_ms", "e2e_p99_ms", "error_rate_max", "min_tokens_per_s")
# Used where neither the model nor the host sets a limit: errors must be rare, and the
# 300 default requests are enough to show a rate under 1 % (0 errors in n bounds it at 3/n).
DEFAULT_LIMITS = {"error_rate_max": 0.01, "eval_tolerance": 0.0}
# Groups whose hosts may switch the gate off without a warning: test and development hosts.
UNGATED_GROUPS = ("test", "testing", "testbed", "dev", "development")


@dataclass(frozen=True)
class GateSettings:
    gate_enabled: bool = setting(
        True, "Soak and eval the staged colour before cutover; false cuts over untested"
    )
    gate_concurrency: int = setting(4, "Closed loop: clients sending at once during the soak")
    gate_rate_per_s: float | None = setting(
        None, "Open loop instead: requests per second (Poisson arrivals); unset: closed loop"
    )
    gate_requests: int = setting(300, "Soak requests (an `error_rate_max` needs enough of them)")
    gate_duration_s: float = setting(
        300, "The soak stops sending after this many seconds, requests done or not"
    )
    gate_max_tokens: int = setting(16, "Tokens asked for in each soak request")
    gate_request_timeout_s: float = setting(
        60, "A soak or eval request unanswered for this long fails (a hung runtime fails the gate)"
    )
    gate_prompts: str | None = setting(
        None, "Prompt mix for the soak: a file of one prompt per line (repo-relative); unset: one"
    )
    gate_limits: dict[str, float] = setting(
        {}, "Limits for this host over the model's `[gates]` (names as there)"
    )
    gate_fail_on_drift: bool = setting(
        False, "Fail the gate when an eval answer differs from the golden set (else: report it)"
    )
