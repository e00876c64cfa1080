"""Role gate: soak and eval the staged colour; only a release that passes is cut over.

preflight  the runtime role's plan (which colour holds the wanted release, and whether it
           already serves), the limits (defaults < the model's `[gates]` < its
           `[gates.<class>]` < the host's `gate_limits`), the eval set, and whether this
           release still needs a verdict
install    the host-side tools (the soak client among them) and the reports directory
service    run the gate (one step on the control machine, `operations.run_gate`):
           the soak runs on the host against the staged colour over loopback; the
           eval's answers are generated there at temperature 0 and checked here,
           against the checks and the golden set; result.json and report.html are
           written here (`gates/<host>/<release>/`) and on the host
           (`/var/lib/llmhost/gates/<release>/`); the verdict goes into state.json.
           Then `gate-check`: on a failed gate the staged colour is stopped and the
           host stops here, before cutover, with the failures and where the report is.

It runs after the runtime role and before cutover in deploy/site.py. A release that
already serves, or already passed, is not gated again: a second run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, python, server

from llmhost.catalog import Model, gate_limit_problem
from llmhost.errors import ConfigError
from llmhost.evalset import EvalSet, load_eval_set
from llmhost.onhost.layout import STATE_FILE
from llmhost.onhost.runtimectl import gate_passed
from llmhost.paths import REPO_ROOT
from llmhost.settings import from_data
from roles._common.checks import check_at_least, on_host
from roles._common.facts import HostState
from roles._common.onhost import install_onhost_tools, runtimectl
from roles.gate.defaults import DEFAULT_LIMITS, GATES_DIR, UNGATED_GROUPS, GateSettings
from roles.gate.operations import GateRun, run_gate
from roles.runtime import Plan as RuntimePlan
from roles.runtime import check as runtime_check
from roles.runtime import preflight as runtime_plan


@dataclass(frozen=True)
class Plan:
    settings: GateSettings
    runtime: RuntimePlan
    limits: dict[str, float]
    eval_set: EvalSet | None
    prompts: tuple[str, ...]
    needed: bool  # whether the wanted release still needs a verdict
    why: str  # why it does, or why not


@deploy("llmhost gate")
def gate() -> None:
    plan = preflight()
    install()
    if not plan.needed:
        host.noop(plan.why)
        return
    service(plan)


# -- preflight ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """The gate's inputs, read and validated with no host contacted."""

    settings: GateSettings
    limits: dict[str, float]
    eval_set: EvalSet | None
    prompts: tuple[str, ...]


def check() -> Checked:
    settings = from_data(GateSettings, host.data, host.name)
    check_settings(settings)
    wanted = runtime_check()
    limits = {
        **DEFAULT_LIMITS,
        **wanted.model.gate_limits(wanted.hardware.name),
        **settings.gate_limits,
    }
    return Checked(settings, limits, served_eval_set(wanted.model), soak_prompts(settings))


def preflight() -> Plan:
    checked = check()
    runtime = runtime_plan()
    needed, why = why_gate(checked.settings, runtime)
    return Plan(
        checked.settings,
        runtime,
        checked.limits,
        checked.eval_set,
        checked.prompts,
        needed,
        why,
    )


def warnings() -> list[str]:
    """A gate switched off outside a test group: allowed, and said before every deploy."""
    settings = from_data(GateSettings, host.data, host.name)
    if settings.gate_enabled or set(host.groups) & set(UNGATED_GROUPS):
        return []
    return [
        f"host {host.name}: gate_enabled is false and the host is in no test group "
        f"({', '.join(UNGATED_GROUPS)}): its releases go to cutover untested"
    ]


def check_settings(settings: GateSettings) -> None:
    counts = ("gate_concurrency", "gate_requests", "gate_max_tokens")
    check_at_least(host.name, settings, counts, 1)
    check_at_least(host.name, settings, ("gate_duration_s", "gate_request_timeout_s"), 1)
    if settings.gate_rate_per_s is not None and settings.gate_rate_per_s <= 0:
        raise ConfigError(
            f"{settings.gate_rate_per_s} is not a rate",
            key="gate_rate_per_s",
            fix="give requests per second > 0, or leave it unset for a closed loop",
            host=host.name,
        )
    for name, value in settings.gate_limits.items():
        problem = gate_limit_problem(name, value)
        if problem:
            raise ConfigError(problem[0], key=f"gate_limits.{name}", fix=problem[1], host=host.name)


def served_eval_set(model: Model) -> EvalSet | None:
    path = model.eval_set_path()
    if path is None:
        return None
    with on_host(host.name, prefix=f"model {model.name}: "):
        return load_eval_set(path)


def soak_prompts(settings: GateSettings) -> tuple[str, ...]:
    if not settings.gate_prompts:
        return ("Hello",)
    path = REPO_ROOT / settings.gate_prompts
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist",
            key="gate_prompts",
            fix="give a file of one prompt per line (relative to the repository)",
            host=host.name,
        )
    prompts = tuple(line for line in path.read_text().splitlines() if line.strip())
    if not prompts:
        raise ConfigError(
            f"{path} holds no prompt", key="gate_prompts", fix="one prompt a line", host=host.name
        )
    return prompts


def why_gate(settings: GateSettings, runtime: RuntimePlan) -> tuple[bool, str]:
    """Whether the wanted release needs a verdict now, and why (or why not)."""
    release, colour = runtime.release.id, runtime.wanted_on
    if runtime.active == colour:
        return False, f"release {release} already serves on {colour}: no gate"
    if not settings.gate_enabled:
        return False, f"gate_enabled is false: release {release} goes to cutover untested"
    state = host.get_fact(HostState, path=STATE_FILE)
    if runtime.stage_on is None and gate_passed(state, colour):
        return False, f"release {release} on {colour} passed its gate already"
    return True, f"release {release} staged on {colour}"


# -- install -----------------------------------------------------------------------------


def install() -> None:
    install_onhost_tools()  # the soak client, run next to the runtime
    files.directory(name=f"{GATES_DIR}: gate reports", path=GATES_DIR, mode="0755")


# -- service -----------------------------------------------------------------------------


def service(plan: Plan) -> None:
    runtime = plan.runtime
    colour, release = runtime.wanted_on, runtime.release
    python.call(
        name=f"Gate: soak and eval {colour} ({plan.why})",
        function=run_gate,
        run=GateRun(
            host=host.name,
            colour=colour,
            port=runtime.settings.runtime_ports[colour],
            release=release.summary() | {"arguments": list(release.arguments)},
            served_model=release.served_model_name,
            model=runtime.model.name,
            models_dir=Path(runtime.model.definition).parent,
            replaced=replaced_release(runtime),
            settings=plan.settings,
            limits=plan.limits,
            eval_set=plan.eval_set,
            prompts=plan.prompts,
        ),
    )
    server.shell(
        name=f"Gate: release {release.id} passed (if not, {colour} is stopped, no cutover)",
        commands=[runtimectl("gate-check", "--colour", colour, "--release", release.id)],
    )


def replaced_release(runtime: RuntimePlan) -> str | None:
    """The id of the release the gated one replaces (what the active colour runs)."""
    state = host.get_fact(HostState, path=STATE_FILE)
    active = (state.get("colours") or {}).get(runtime.active or "") or {}
    found = active.get("id")
    return found if isinstance(found, str) else None
