"""The production eval on serving hosts: a timer scores the active colour as its gate did.

check      `monitoring_eval_schedule` (a systemd OnCalendar expression, read here, offline),
           the tolerance and the timeout; the model's eval set, whose JSON schemas must keep
           to the subset the host-side checks judge (``llmhost.onhost.evalcheck``)
install    the host-side tools; the `llmhost-eval` user; the eval set as the host-side eval
           reads it (``EVAL_SET_FILE``, root:llmhost 0640, the same bytes on every run)
configure  our own oneshot unit (``onhost.pyz eval-drift``, hardened, writing nothing but
           its own directory in node exporter's textfile directory) and its timer
service    the timer running; the eval's directory and the link node exporter reads the
           metrics through (an empty file behind it until the first run: never dangling)

A host that serves no model, a model without an eval set, or an empty schedule gets none
of it, and what an earlier run installed is removed. The alert that reads the metrics
(EvalScoreBelowGate) is in templates/monitoring/rules.yml.j2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.operations import files, server, systemd

from llmhost.catalog import find
from llmhost.errors import ConfigError
from llmhost.evalset import EvalSet, load_eval_set, production_problems
from llmhost.oncalendar import CalendarError, check_calendar
from llmhost.onhost.evalcheck import REGEX_TIMEOUT_S
from llmhost.onhost.layout import (
    COLOURS,
    EVAL_DIR,
    EVAL_METRICS_LINK,
    EVAL_METRICS_NAME,
    EVAL_SET_FILE,
    ONHOST_APP,
    SERVICE_USER,
)
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_at_least, on_host
from roles._common.onhost import install_onhost_tools
from roles._common.ports import ports_in_use
from roles.monitoring.defaults import (
    EVAL_DRIFT_SERVICE,
    EVAL_DRIFT_TIMER,
    EVAL_USER,
    MonitoringSettings,
)

UNITS_DIR = "/etc/systemd/system"
# systemd's StateDirectory= is relative to /var/lib.
STATE_DIRECTORY = EVAL_DIR.removeprefix("/var/lib/")


@dataclass(frozen=True)
class EvalDrift:
    schedule: str
    model: str
    eval_set: EvalSet


def check(settings: MonitoringSettings) -> EvalDrift | None:
    """The production eval this host runs (None: none), with no host contacted."""
    tolerance = settings.monitoring_eval_tolerance
    if not 0 <= tolerance <= 1:
        raise ConfigError(
            f"{tolerance} is not a part of a score from 0 to 1",
            key="monitoring_eval_tolerance",
            fix="give e.g. 0.05: the alert fires 5 points (of 100) below the gated score",
            host=host.name,
        )
    check_at_least(host.name, settings, ("monitoring_eval_timeout_s",), 1)
    schedule = settings.monitoring_eval_schedule
    if schedule:
        try:
            check_calendar(schedule)
        except CalendarError as error:
            raise ConfigError(
                f"{schedule!r} is not a calendar expression llmhost can check: {error}",
                key="monitoring_eval_schedule",
                fix="give a systemd OnCalendar expression such as hourly, daily, *:0/30 or "
                "'Mon..Fri *-*-* 09:00' (man systemd.time), or '' to switch the production "
                "eval off",
                host=host.name,
            ) from error
    name = host.data.get("model_name")
    if not schedule or not name or not isinstance(name, str):
        return None  # a model_name that is not a name: the model role's check says so
    with on_host(host.name, key="model_name"):
        model = find(name)
    path = model.eval_set_path()
    if path is None:
        return None
    with on_host(host.name, prefix=f"model {model.name}: "):
        eval_set = load_eval_set(path)
        problems = production_problems(eval_set)
        if problems:
            raise problems[0]
    return EvalDrift(schedule, model.name, eval_set)


def why_off(settings: MonitoringSettings) -> str:
    if not host.data.get("model_name"):
        return "the host serves no model"
    if not settings.monitoring_eval_schedule:
        return "monitoring_eval_schedule is empty"
    return f"model {host.data.get('model_name')} has no eval set"


def eval_drift(settings: MonitoringSettings) -> None:
    """The timer and what it needs where the host runs the production eval, else none."""
    wanted = check(settings)
    if wanted is None:
        off(why_off(settings))
    else:
        on(settings, wanted)


def eval_set_document(model: str, eval_set: EvalSet) -> str:
    """What the host-side eval reads: each item's id, prompt, budget and check, in file order
    (key order kept: a schema's `patternProperties` are searched in the order written)."""
    items = [
        {"id": i.id, "prompt": i.prompt, "max_tokens": i.max_tokens, "check": {i.kind: i.expected}}
        for i in eval_set.items
    ]
    document = {"version": 1, "model": model, "eval_set_sha256": eval_set.sha256, "items": items}
    return json.dumps(document, indent=1) + "\n"


def service_variables(settings: MonitoringSettings, wanted: EvalDrift) -> dict[str, Any]:
    """The service unit's template variables: the engines' ports, the limits, who runs it."""
    ports = ports_in_use(host.name, host.data, host.groups)
    timeout = settings.monitoring_eval_timeout_s
    return {
        "app": ONHOST_APP,
        "run_as": EVAL_USER,
        "read_group": SERVICE_USER,
        "state_directory": STATE_DIRECTORY,
        "ports": ",".join(f"{c}={ports[f'runtime_ports.{c}']}" for c in COLOURS),
        "timeout": timeout,
        "tolerance": settings.monitoring_eval_tolerance,
        # Each answer may take its timeout and each check its regex limit; past all of them
        # the run is hung.
        "time_limit": int(len(wanted.eval_set.items) * (timeout + REGEX_TIMEOUT_S)) + 60,
    }


def on(settings: MonitoringSettings, wanted: EvalDrift) -> None:
    install_onhost_tools()
    server.group(name=f"Group {EVAL_USER}", group=EVAL_USER, system=True)
    server.user(
        name=f"System user {EVAL_USER} (runs the production eval)",
        user=EVAL_USER,
        group=EVAL_USER,
        system=True,
        home="/nonexistent",
        create_home=False,
        ensure_home=False,
        shell="/usr/sbin/nologin",
    )
    checked.put(
        name=f"{EVAL_SET_FILE}: {wanted.model}'s eval set, for the production eval",
        src=StringIO(eval_set_document(wanted.model, wanted.eval_set)),
        dest=EVAL_SET_FILE,
        user="root",
        group=SERVICE_USER,
        mode="0640",
        create_remote_dir=False,
    )
    units = [
        put_template(
            name=f"{EVAL_DRIFT_SERVICE} (hardened)",
            path="monitoring/eval-drift.service.j2",
            dest=f"{UNITS_DIR}/{EVAL_DRIFT_SERVICE}",
            mode="0644",
            **service_variables(settings, wanted),
        ),
        put_template(
            name=f"{EVAL_DRIFT_TIMER} ({wanted.schedule})",
            path="monitoring/eval-drift.timer.j2",
            dest=f"{UNITS_DIR}/{EVAL_DRIFT_TIMER}",
            mode="0644",
            schedule=wanted.schedule,
        ),
    ]
    changed = any(unit.will_change for unit in units)
    checked.service(
        name=f"{EVAL_DRIFT_TIMER}: running and enabled",
        service=EVAL_DRIFT_TIMER,
        running=True,
        enabled=True,
        restarted=changed,
        daemon_reload=changed,
    )
    # Its own directory (the unit's StateDirectory=, made here so the link never dangles):
    # the textfile directory is root's, so nobody but root can put a link or file beside it.
    files.directory(
        name=f"{EVAL_DIR}: the production eval's only writable place",
        path=EVAL_DIR,
        user=EVAL_USER,
        group=EVAL_USER,
        mode="0755",
    )
    metrics = f"{EVAL_DIR}/{EVAL_METRICS_NAME}"
    link = files.link(
        name=f"{EVAL_METRICS_LINK}: node exporter reads the production eval's metrics",
        path=EVAL_METRICS_LINK,
        target=metrics,
        user="root",
        group="root",
        create_remote_dir=False,
    )
    # Empty (no metrics) until the first run; made as the eval's user, never as root in a
    # directory that user owns. Not a run now: it would load the engine mid-deploy.
    server.shell(
        name=f"{metrics}: empty until the first run (the link is new)",
        commands=[f"test -e {metrics} || runuser -u {EVAL_USER} -- touch {metrics}"],
        _if=link.did_change,
    )


def off(why: str) -> None:
    removed = checked.retired(
        name=f"No production eval ({why}): timer off, units and files removed",
        units=[EVAL_DRIFT_TIMER],
        paths=[
            f"{UNITS_DIR}/{EVAL_DRIFT_TIMER}",
            f"{UNITS_DIR}/{EVAL_DRIFT_SERVICE}",
            EVAL_SET_FILE,
            EVAL_METRICS_LINK,
        ],
        directories=[EVAL_DIR],
    )
    systemd.daemon_reload(
        name="systemd: forget the production eval's units", _if=removed.did_change
    )
