"""The one-command checks in front of pyinfra's operations.

Each check either proves the host matches (no command, and none of pyinfra's facts read)
or hands over, and then the commands are exactly those of pyinfra's own operation for the
same host. Both are tested over a grid of host states, with the host described once in
pyinfra's facts (the plan helper derives the checks' facts from them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from llmhost.render import render
from roles._common import checked
from tests.unit.pyinfra_plan import per_argument, plan

DEST = "/etc/llmhost/example.conf"
CONTENT = "key = value\n"
SHA1 = hashlib.sha1(CONTENT.encode()).hexdigest()


def planned(operation: Callable[..., Any], facts: dict[str, Any], **arguments: Any) -> list[str]:
    """The commands ``operation`` plans on a host with ``facts``."""

    @deploy("one operation")
    def one() -> None:
        operation(name="the operation", **arguments)

    return plan(one, {}, facts=facts)["the operation"]


def refused(**_: Any) -> Any:
    raise AssertionError("pyinfra's own fact was read although the check had settled it")


def file_facts(found: dict[str, Any] | None, sha1: str | None) -> dict[str, Any]:
    """A host where ``DEST``'s directory exists and ``DEST`` is ``found``, with ``sha1``."""
    return {
        "File": per_argument({f"path={DEST}": found}),
        "Sha1File": per_argument({f"path={DEST}": sha1}),
        "Directory": per_argument({"path=/etc/llmhost": {"user": "root", "group": "llmhost"}}),
    }


OWNED = {"user": "root", "group": "llmhost", "mode": 640}
FILE_STATES = {
    "missing": file_facts(None, None),
    "same": file_facts(OWNED, SHA1),
    "other content": file_facts(OWNED, "0" * 40),
    "other mode": file_facts({**OWNED, "mode": 644}, SHA1),
    "other group": file_facts({**OWNED, "group": "root"}, SHA1),
    "a symlink": file_facts(False, SHA1),
}


@pytest.mark.parametrize("state", FILE_STATES)
def test_put_plans_what_files_put_plans(state):
    arguments = {"dest": DEST, "user": "root", "group": "llmhost", "mode": "0640"}
    ours = planned(checked.put, FILE_STATES[state], src=StringIO(CONTENT), **arguments)
    theirs = planned(files.put, FILE_STATES[state], src=StringIO(CONTENT), **arguments)
    # An upload names a temporary file of its own; every other command must be the same.
    assert [c.split("(")[0] for c in ours[:1]] == [c.split("(")[0] for c in theirs[:1]]
    assert ours[1:] == theirs[1:]
    assert (ours == []) is (state == "same")


def test_a_matching_file_is_settled_by_its_summary_alone():
    summary = {"user": "root", "group": "llmhost", "mode": 640, "sha1": SHA1}
    facts = {"FileSummary": summary, "File": refused, "Sha1File": refused}
    arguments = {"dest": DEST, "user": "root", "group": "llmhost", "mode": "0640"}
    assert planned(checked.put, facts, src=StringIO(CONTENT), **arguments) == []


@pytest.mark.parametrize("installed", ["rendered", "other"])
def test_a_template_is_uploaded_as_render_gives_it(installed):
    variables = {"servers": ["ntp.internal"], "in_container": True}
    content = render("base/chrony.conf.j2", **variables)
    sha1 = hashlib.sha1((content if installed == "rendered" else "other").encode()).hexdigest()
    facts = {
        "FileSummary": {"user": "root", "group": "root", "mode": 644, "sha1": sha1},
        "File": {"user": "root", "group": "root", "mode": 644},
        "Sha1File": sha1,
    }

    @deploy("template")
    def template() -> None:
        checked.put_template(
            name="chrony",
            path="base/chrony.conf.j2",
            dest="/etc/chrony/chrony.conf",
            mode="0644",
            _sudo=True,
            **variables,
        )

    commands = plan(template, {}, facts=facts)["chrony"]
    if installed == "rendered":
        assert commands == []
    else:
        assert commands[0].startswith("FileUploadCommand(")
        assert commands[1:] == [
            "chown root:root /etc/chrony/chrony.conf",
            "chmod 644 /etc/chrony/chrony.conf",
        ]


UNIT = "chrony.service"
UNIT_STATES = {
    "running and enabled": ({UNIT: True}, {UNIT: True}),
    "stopped, enabled": ({UNIT: False}, {UNIT: True}),
    "running, disabled": ({UNIT: True}, {UNIT: False}),
    "not installed": ({}, {}),
}
WANTED = [
    {"running": True, "enabled": True},
    {"running": False, "enabled": False},
    {"running": True, "enabled": True, "restarted": True},
    {"running": True, "reloaded": True},
    {"running": True, "enabled": True, "daemon_reload": True},
]


@pytest.mark.parametrize("state", UNIT_STATES)
@pytest.mark.parametrize("wanted", WANTED, ids=lambda w: ",".join(w))
def test_service_plans_what_systemd_service_plans(state, wanted):
    running, enabled = UNIT_STATES[state]
    facts = {"SystemdStatus": running, "SystemdEnabled": enabled}
    ours = planned(checked.service, facts, service=UNIT, **wanted)
    assert ours == planned(systemd.service, facts, service=UNIT, **wanted)


def test_a_unit_in_its_wanted_state_is_settled_by_its_summary_alone():
    summary = {"Id": UNIT, "SubState": "waiting", "UnitFileState": "enabled"}
    facts = {"UnitSummary": summary, "SystemdStatus": refused, "SystemdEnabled": refused}
    assert planned(checked.service, facts, service=UNIT, running=True, enabled=True) == []


def test_a_unit_known_by_another_name_is_left_to_systemd_service():
    # An alias answers with its unit's Id: pyinfra's own facts decide then.
    summary = {"Id": "ssh.service", "SubState": "running", "UnitFileState": "enabled"}
    facts = {"UnitSummary": summary, "SystemdStatus": {}, "SystemdEnabled": {}}
    assert planned(checked.service, facts, service="sshd.service", enabled=True) == [
        "systemctl start sshd.service",
        "systemctl enable sshd.service",
    ]


PACKAGE_STATES = {
    "installed": {"chrony": ["4.3-2+deb12u3"], "nftables": ["1.0.6-2+deb12u2"]},
    "one missing": {"chrony": ["4.3-2+deb12u3"]},
    "none": {},
}
PACKAGE_WANTS = [
    {"packages": ["chrony", "nftables"]},
    {"packages": ["chrony=4.3-2+deb12u3"]},
    {"packages": ["chrony=4.3-2+deb12u4"]},
    {"packages": ["chrony"], "update": True},
    {"packages": ["nftables"], "no_recommends": True},
]


@pytest.mark.parametrize("state", PACKAGE_STATES)
@pytest.mark.parametrize("wanted", PACKAGE_WANTS, ids=lambda w: " ".join(map(str, w.values())))
def test_packages_plans_what_apt_packages_plans(state, wanted):
    facts = {"DebPackages": PACKAGE_STATES[state]}
    assert planned(checked.packages, facts, **wanted) == planned(apt.packages, facts, **wanted)


def test_installed_packages_are_settled_without_listing_every_package():
    facts = {"PackageStatus": {"chrony": "4.3-2+deb12u3"}, "DebPackages": refused}
    assert planned(checked.packages, facts, packages=["chrony=4.3-2+deb12u3"]) == []


USER = {"home": "/var/lib/llmhost", "shell": "/usr/sbin/nologin", "group": "llmhost"}
HOME = {"user": "llmhost", "group": "llmhost", "mode": 755}
USER_STATES = {
    "as wanted": ({"llmhost": USER}, HOME),
    "missing": ({}, None),
    "other shell": ({"llmhost": {**USER, "shell": "/bin/sh"}}, HOME),
    "other group": ({"llmhost": {**USER, "group": "nogroup"}}, HOME),
    "home owned by root": ({"llmhost": USER}, {**HOME, "user": "root"}),
    "no home": ({"llmhost": USER}, None),
}


@pytest.mark.parametrize("state", USER_STATES)
def test_user_plans_what_server_user_plans(state):
    users, home = USER_STATES[state]
    facts = {
        "Users": users,
        "Groups": {"llmhost"},
        "Directory": per_argument({"path=/var/lib/llmhost": home}),
    }
    wanted = {
        "user": "llmhost",
        "group": "llmhost",
        "home": "/var/lib/llmhost",
        "shell": "/usr/sbin/nologin",
        "system": True,
    }
    ours = planned(checked.user, facts, **wanted)
    assert ours == planned(server.user, facts, **wanted)
    assert (ours == []) is (state == "as wanted")


@pytest.mark.parametrize("groups", [{"llmhost"}, set(), {"llmhost-extra"}])
def test_group_plans_what_server_group_plans(groups):
    facts = {"Groups": groups}
    ours = planned(checked.group, facts, group="llmhost", system=True)
    assert ours == planned(server.group, facts, group="llmhost", system=True)
    assert (ours == []) is ("llmhost" in groups)


TIMER = "llmhost-eval-drift.timer"
UNIT_FILE = f"/etc/systemd/system/{TIMER}"
LINK = "/var/lib/prometheus/node-exporter/llmhost-eval.prom"
STATE_DIR = "/var/lib/prometheus/node-exporter/llmhost-eval"
RETIRED_STATES = {
    "all gone": {},
    "timer running, everything there": {
        "SystemdStatus": {TIMER: True},
        "SystemdEnabled": {TIMER: True},
        "File": per_argument({f"path={UNIT_FILE}": {"user": "root", "mode": 644}}),
        "Link": per_argument({f"path={LINK}": {"link_target": "/x"}}),
        "Directory": per_argument({f"path={STATE_DIR}": {"user": "root", "mode": 755}}),
    },
    "timer stopped but enabled, the link left": {
        "SystemdStatus": {TIMER: False},
        "SystemdEnabled": {TIMER: True},
        "Link": per_argument({f"path={LINK}": {"link_target": "/x"}}),
    },
}


@pytest.mark.parametrize("state", RETIRED_STATES)
def test_retired_plans_what_pyinfra_plans_unit_by_unit_and_path_by_path(state):
    facts = RETIRED_STATES[state]
    ours = planned(
        checked.retired, facts, units=[TIMER], paths=[UNIT_FILE, LINK], directories=[STATE_DIR]
    )

    @deploy("pyinfra's own")
    def theirs() -> None:
        systemd.service(name="unit", service=TIMER, running=False, enabled=False)
        files.file(name="file", path=UNIT_FILE, present=False)
        files.link(name="link", path=LINK, present=False)
        files.directory(name="directory", path=STATE_DIR, present=False)

    pyinfra = plan(theirs, {}, facts=facts)
    assert ours == [c for op in ("unit", "file", "link", "directory") for c in pyinfra[op]]
    assert (ours == []) is (state == "all gone")


def test_nothing_left_is_settled_in_one_fact():
    facts = {
        "Leftovers": {"running": [], "enabled": [], "paths": []},
        "SystemdStatus": refused,
        "File": refused,
        "Directory": refused,
    }
    assert planned(checked.retired, facts, units=[TIMER], paths=[UNIT_FILE]) == []
