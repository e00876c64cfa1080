"""The production eval's part of the monitoring role: the timer on, off, and a second run.

Planned for one fake host (no host is contacted); a serving host whose model has an eval
set gets the user, the eval set file, the hardened oneshot unit and its timer, and the
link node exporter reads the metrics through; any other host gets none of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pyinfra.api import Inventory
from pyinfra.context import ctx_host, ctx_inventory

from llmhost.errors import ConfigError
from llmhost.evalset import load_eval_set
from llmhost.onhost.layout import EVAL_DIR, EVAL_METRICS_LINK, EVAL_SET_FILE
from llmhost.render import render
from llmhost.settings import from_data
from roles.monitoring import evaldrift, monitoring
from roles.monitoring.defaults import MonitoringSettings
from tests.unit.pyinfra_plan import per_argument, plan
from tests.unit.test_model_role import DIGEST, model_file
from tests.unit.test_model_role import host_data as serving_data

SERVICE = "/etc/systemd/system/llmhost-eval-drift.service"
TIMER = "/etc/systemd/system/llmhost-eval-drift.timer"
EVAL_LINES = [
    {"id": "hi", "prompt": "Say hi", "max_tokens": 4, "check": {"exact": "hi"}},
    {"id": "n", "prompt": "A number", "check": {"regex": r"^\s*\d+"}},
    {"id": "j", "prompt": "JSON", "check": {"json_schema": {"type": "object", "required": ["a"]}}},
]


def write_catalog(models: Path, lines: list[dict] | None) -> None:
    text = model_file("tiny", digest=DIGEST)
    if lines is not None:
        text = text.replace("[source]", 'eval_set = "evals/tiny.jsonl"\n\n[source]', 1)
        (models / "evals").mkdir(exist_ok=True)
        (models / "evals" / "tiny.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    (models / "tiny.toml").write_text(text)


@pytest.fixture(autouse=True)
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    write_catalog(directory, EVAL_LINES)
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(directory))
    return directory


def data(**overrides):
    return {**serving_data(), "ssh_hostname": "10.0.0.8", **overrides}


def mine(planned: dict[str, list[str]]) -> dict[str, list[str]]:
    """The operations of the production eval (its user, files, units and link)."""
    marks = ("llmhost-eval", "production eval", EVAL_SET_FILE)
    return {name: cmds for name, cmds in planned.items() if any(m in name for m in marks)}


def on_host(host_data: dict, function, *args):
    """Call a role function with ``host1`` (this data) in context, as a deploy would."""
    inventory = Inventory(([("host1", host_data)], {}))
    with ctx_inventory.use(inventory), ctx_host.use(inventory.get_host("host1")):
        return function(*args)


def test_a_serving_host_gets_the_user_the_eval_set_the_units_the_timer_and_the_link():
    planned = mine(plan(monitoring, data()))
    assert list(planned) == [
        "Group llmhost-eval",
        "System user llmhost-eval (runs the production eval)",
        f"{EVAL_SET_FILE}: tiny's eval set, for the production eval",
        "llmhost-eval-drift.service (hardened)",
        "llmhost-eval-drift.timer (hourly)",
        "llmhost-eval-drift.timer: running and enabled",
        f"{EVAL_DIR}: the production eval's only writable place",
        f"{EVAL_METRICS_LINK}: node exporter reads the production eval's metrics",
        f"{EVAL_DIR}/llmhost-eval.prom: empty until the first run (the link is new)",
    ]
    assert planned["System user llmhost-eval (runs the production eval)"] == [
        "useradd -d /nonexistent -s /usr/sbin/nologin -g llmhost-eval -r -M llmhost-eval"
    ]
    eval_file = planned[f"{EVAL_SET_FILE}: tiny's eval set, for the production eval"]
    assert eval_file[1:] == [f"chown root:llmhost {EVAL_SET_FILE}", f"chmod 640 {EVAL_SET_FILE}"]
    link = planned[f"{EVAL_METRICS_LINK}: node exporter reads the production eval's metrics"]
    assert link == [
        f"ln -s {EVAL_DIR}/llmhost-eval.prom {EVAL_METRICS_LINK}",
        f"chown -h root:root {EVAL_METRICS_LINK}",
    ], "the textfile directory itself is left as it is"
    timer = planned["llmhost-eval-drift.timer: running and enabled"]
    assert timer == [
        "systemctl daemon-reload",
        "systemctl start llmhost-eval-drift.timer",
        "systemctl enable llmhost-eval-drift.timer",
    ]
    assert planned[f"{EVAL_DIR}: the production eval's only writable place"] == [
        f"mkdir -p {EVAL_DIR}",
        f"chmod 755 {EVAL_DIR}",
        f"chown llmhost-eval:llmhost-eval {EVAL_DIR}",
    ]
    empty = planned[f"{EVAL_DIR}/llmhost-eval.prom: empty until the first run (the link is new)"]
    metrics = f"{EVAL_DIR}/llmhost-eval.prom"
    assert empty == [f"test -e {metrics} || runuser -u llmhost-eval -- touch {metrics}"]


def wanted(host_data: dict) -> tuple[MonitoringSettings, evaldrift.EvalDrift]:
    settings = from_data(MonitoringSettings, host_data, "host1")
    found = on_host(host_data, evaldrift.check, settings)
    assert found is not None
    return settings, found


def service_text(host_data: dict) -> str:
    settings, found = wanted(host_data)
    variables = on_host(host_data, evaldrift.service_variables, settings, found)
    return render("monitoring/eval-drift.service.j2", **variables)


def test_the_unit_runs_the_eval_hardened_as_its_own_user_against_the_runtime_ports():
    text = service_text(data(runtime_ports={"blue": 8101, "green": 8102}))
    assert (
        "ExecStart=/usr/bin/python3 /usr/local/lib/llmhost/onhost.pyz eval-drift "
        "--ports blue=8101,green=8102 --timeout 60 --tolerance 0.05\n"
    ) in text
    for line in (
        "Type=oneshot", "User=llmhost-eval", "SupplementaryGroups=llmhost",
        "StateDirectory=prometheus/node-exporter/llmhost-eval", "StateDirectoryMode=0755",
        "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet=",
        "IPAddressDeny=any", "IPAddressAllow=localhost",
        f"TimeoutStartSec={3 * 62 + 60}",  # three items, each its timeout and a regex limit
    ):  # fmt: skip
        assert f"\n{line}\n" in text, line
    assert "ReadWritePaths" not in text, "it writes nothing but its own state directory"
    assert "[Install]" not in text, "the timer starts it, nothing else"
    timer = render("monitoring/eval-drift.timer.j2", schedule="*:0/30")
    assert "\nOnCalendar=*:0/30\n" in timer and "\nWantedBy=timers.target\n" in timer


def test_the_eval_set_reaches_the_host_as_the_checks_read_it_the_same_bytes_each_time(models):
    eval_set = load_eval_set(models / "evals" / "tiny.jsonl")
    text = evaldrift.eval_set_document("tiny", eval_set)
    assert text == evaldrift.eval_set_document("tiny", load_eval_set(eval_set.path))
    document = json.loads(text)
    assert document["version"] == 1 and document["eval_set_sha256"] == eval_set.sha256
    assert document["items"] == [
        {"id": "hi", "prompt": "Say hi", "max_tokens": 4, "check": {"exact": "hi"}},
        {"id": "n", "prompt": "A number", "max_tokens": 32, "check": {"regex": r"^\s*\d+"}},
        {"id": "j", "prompt": "JSON", "max_tokens": 32,
         "check": {"json_schema": {"type": "object", "required": ["a"]}}},
    ]  # fmt: skip


def installed_facts(host_data: dict) -> dict:
    """A host where the first run did everything (the files as the role renders them)."""
    settings, found = wanted(host_data)
    service = render(
        "monitoring/eval-drift.service.j2",
        **on_host(host_data, evaldrift.service_variables, settings, found),
    )
    contents = {
        EVAL_SET_FILE: evaldrift.eval_set_document("tiny", found.eval_set),
        SERVICE: service,
        TIMER: render("monitoring/eval-drift.timer.j2", schedule=found.schedule),
    }
    owners = {
        EVAL_SET_FILE: {"mode": 640, "user": "root", "group": "llmhost"},
        SERVICE: {"mode": 644, "user": "root", "group": "root"},
        TIMER: {"mode": 644, "user": "root", "group": "root"},
    }
    return {
        "Groups": ["llmhost", "llmhost-eval"],
        "Users": {"llmhost-eval": {"home": "/nonexistent", "shell": "/usr/sbin/nologin",
                                   "group": "llmhost-eval", "groups": [], "comment": None}},
        "File": per_argument({f"path={p}": v for p, v in owners.items()}),
        "Sha1File": per_argument(
            {f"path={p}": hashlib.sha1(t.encode()).hexdigest() for p, t in contents.items()}
        ),
        "Directory": per_argument({f"path={EVAL_DIR}": {
            "mode": 755, "user": "llmhost-eval", "group": "llmhost-eval"}}),
        "SystemdStatus": {"llmhost-eval-drift.timer": True},
        "SystemdEnabled": {"llmhost-eval-drift.timer": True},
        "Link": per_argument({f"path={EVAL_METRICS_LINK}": {
            "link_target": f"{EVAL_DIR}/llmhost-eval.prom", "user": "root", "group": "root"}}),
    }  # fmt: skip


def test_a_second_run_changes_nothing():
    planned = mine(plan(monitoring, data(), facts=installed_facts(data())))
    # Listed because it is conditional: it runs only when the link (a noop here) changed.
    assert planned.pop(f"{EVAL_DIR}/llmhost-eval.prom: empty until the first run (the link is new)")
    assert planned and all(commands == [] for commands in planned.values()), planned


def test_a_changed_schedule_rewrites_the_timer_and_restarts_it():
    planned = mine(
        plan(monitoring, data(monitoring_eval_schedule="daily"), installed_facts(data()))
    )
    assert planned["llmhost-eval-drift.timer (daily)"][0].startswith("FileUploadCommand")
    assert planned["llmhost-eval-drift.timer: running and enabled"] == [
        "systemctl daemon-reload",
        "systemctl restart llmhost-eval-drift.timer",
    ]


@pytest.mark.parametrize(
    ("host_data", "why"),
    [
        (data(monitoring_eval_schedule=""), "monitoring_eval_schedule is empty"),
        (data(monitoring_eval_schedule=None), "monitoring_eval_schedule is empty"),
        ({"region": "gb-lon1", "hardware": "cpu", "ssh_hostname": "10.0.0.7"},
         "the host serves no model"),
    ],
)  # fmt: skip
def test_with_the_timer_off_nothing_is_installed_and_an_earlier_install_is_removed(host_data, why):
    planned = mine(plan(monitoring, host_data, facts=installed_facts(data())))
    retired = f"No production eval ({why}): timer off, units and files removed"
    assert list(planned) == [retired, "systemd: forget the production eval's units"]
    assert planned[retired] == [
        "systemctl stop llmhost-eval-drift.timer",
        "systemctl disable llmhost-eval-drift.timer",
        f"rm -f {TIMER}",
        f"rm -f {SERVICE}",
        f"rm -f {EVAL_SET_FILE}",
        f"rm -f {EVAL_METRICS_LINK}",
        f"rm -rf {EVAL_DIR}",
    ]
    assert planned["systemd: forget the production eval's units"] == ["systemctl daemon-reload"]


def test_a_model_without_an_eval_set_has_no_timer_and_on_a_fresh_host_that_is_all_noops(models):
    write_catalog(models, None)
    planned = mine(plan(monitoring, data()))
    assert (
        "No production eval (model tiny has no eval set): timer off, units and files removed"
        in planned
    )
    # Conditional (listed): it runs only when a unit file was removed, and none was here.
    assert planned.pop("systemd: forget the production eval's units")
    assert all(commands == [] for commands in planned.values()), planned


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        ({"monitoring_eval_schedule": "every hour"}, "monitoring_eval_schedule",
         "'every hour' is not a calendar expression llmhost can check"),
        ({"monitoring_eval_schedule": "*-*-* 25:00"}, "monitoring_eval_schedule",
         "25 is not an hour"),
        ({"monitoring_eval_tolerance": 1.5}, "monitoring_eval_tolerance", "1.5 is not a part"),
        ({"monitoring_eval_timeout_s": 0}, "monitoring_eval_timeout_s", "0 is below 1"),
    ],
)  # fmt: skip
def test_bad_eval_settings_are_refused_naming_the_key(overrides, key, text):
    with pytest.raises(ConfigError) as raised:
        plan(monitoring, data(**overrides))
    assert raised.value.key == key and text in str(raised.value)


def test_a_schema_the_host_cannot_check_is_refused_with_its_file_and_line_only_when_on(models):
    lines = [*EVAL_LINES, {"id": "ref", "prompt": "p",
                           "check": {"json_schema": {"items": {"multipleOf": 2}}}}]  # fmt: skip
    write_catalog(models, lines)
    with pytest.raises(ConfigError) as raised:
        plan(monitoring, data())
    message = str(raised.value)
    assert f"{models / 'evals' / 'tiny.jsonl'}:4: item 'ref'" in message
    assert "uses `multipleOf` (in the schema at /items)" in message
    assert "monitoring_eval_schedule = ''" in message and raised.value.key == "eval_set"
    assert mine(plan(monitoring, data(monitoring_eval_schedule="")))  # off: the gate judges it
