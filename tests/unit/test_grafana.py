"""Grafana on `monitoring` hosts: the plan for a fresh host and a converged one, the signing
key's check (the shared script, given Grafana's pin and words; tests/unit/test_apt_key.py runs
it), the mirror, Grafana turned off, the admin password, and the files Grafana is provisioned
from."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.errors import ConfigError
from llmhost.render import render
from llmhost.secrets import GRAFANA_FILE, grafana_admin_password
from llmhost.settings import from_data
from roles._common.operations import APT_KEYRINGS_DIR, apt_key_script
from roles.monitoring import monitoring
from roles.monitoring.defaults import MonitoringSettings
from roles.monitoring.grafana import (
    DASHBOARDS,
    DATASOURCE_UID,
    DROPIN,
    GRAFANA_UNIT,
    KEY_FINGERPRINT,
    KEYRING,
    PASSWORD_FILE,
    PREFERENCES,
    ROTATED,
    SOURCES,
    UNREACHABLE,
    dashboard_sources,
    provisioning_directories,
    provisioning_files,
)
from tests.unit.pyinfra_plan import SECRETS_DIR, per_argument, plan

MONITOR = {"region": "gb-lon1", "hardware": "cpu", "ssh_hostname": "10.0.0.2"}
DROPIN_DIR = DROPIN.rsplit("/", 1)[0]
# Operations that run only when another one changed something (``_if``): the plan lists
# their commands whatever the facts, so idempotence is what triggers them, checked below.
CONDITIONAL = (
    "systemd: load Grafana's drop-in",
    "Grafana: listening",
    "Grafana: the new admin password set in its database",
    "Firewall: apply changed rules",
)


def grafana_plan(data: dict[str, Any] | None = None, **arguments: Any) -> dict[str, list[str]]:
    """The monitoring role's plan on a `monitoring` host, Grafana's operations only."""
    planned = plan(monitoring, {**MONITOR, **(data or {})}, groups=["monitoring"], **arguments)
    names = list(planned)
    first = next(i for i, name in enumerate(names) if name.startswith("/etc/llmhost-grafana"))
    return dict(list(planned.items())[first:])


def commands(planned: dict[str, list[str]], prefix: str) -> list[str]:
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def position(planned: dict[str, list[str]], prefix: str) -> int:
    return next(i for i, name in enumerate(planned) if name.startswith(prefix))


def settings(data: dict[str, Any] | None = None) -> MonitoringSettings:
    return from_data(MonitoringSettings, {**MONITOR, **(data or {})})


# -- a fresh host ----------------------------------------------------------------------------


def test_a_fresh_monitoring_host_gets_provisioning_then_key_repository_package_and_service():
    planned = grafana_plan()
    order = [
        position(planned, "Grafana: provisioning/datasources/llmhost.yaml"),
        position(planned, "Grafana: dashboards/cluster-health.json"),
        position(planned, "gpg (checks Grafana"),
        position(planned, f"Grafana's signing key {KEY_FINGERPRINT} alone"),
        position(planned, "APT: Grafana's repository https://apt.grafana.com"),
        position(planned, "APT: Grafana pinned to 13.2.3"),
        position(planned, "Install Grafana 13.2.3"),
        position(planned, "Grafana: admin password"),
        position(planned, "Grafana: drop-in"),
        position(planned, f"{GRAFANA_UNIT}: running and enabled"),
    ]
    assert order == sorted(order), list(planned)
    key = commands(planned, "Grafana's signing key")
    assert len(key) == 1 and "url=https://apt.grafana.com/gpg.key" in key[0]
    assert f"fpr={KEY_FINGERPRINT}" in key[0] and f"keyring={KEYRING}" in key[0]
    everything = "\n".join(c for cmds in planned.values() for c in cmds)
    assert not re.search(r"(^|[\s;&|(])apt-key\s", everything) and "trusted.gpg" not in everything
    install = commands(planned, "Install Grafana 13.2.3")
    assert install[0] == "apt-get update"
    assert install[1].endswith("install --no-install-recommends grafana=13.2.3")
    assert f"chmod 600 {PASSWORD_FILE}" in commands(planned, "Grafana: admin password")
    assert f"chown root:root {PASSWORD_FILE}" in commands(planned, "Grafana: admin password")
    assert commands(planned, f"{GRAFANA_UNIT}: running and enabled") == [
        f"systemctl start {GRAFANA_UNIT}",
        f"systemctl enable {GRAFANA_UNIT}",
    ]
    assert "'sport = :3000'" in commands(planned, "Grafana: listening")[0]
    # closed to the network unless monitoring_ui_allow_from names who may reach it
    closed = (
        "Firewall: Grafana closed (no monitoring_ui_allow_from: reach it through an SSH tunnel)"
    )
    assert closed in planned


def test_every_provisioning_file_gets_its_owner_and_mode_in_the_same_operation():
    planned = grafana_plan()
    for item in provisioning_files(settings()):
        name = f"Grafana: {item.path.removeprefix('/etc/llmhost-grafana/')}"
        assert commands(planned, name)[1:] == [
            f"chown root:root {item.path}",
            f"chmod 644 {item.path}",
        ], name
    for directory in provisioning_directories():
        assert f"chmod 755 {directory}" in commands(planned, f"{directory}: Grafana's")


def test_the_admin_password_is_in_no_command_and_the_same_on_every_run():
    planned = grafana_plan()
    password = grafana_admin_password(Path(SECRETS_DIR))
    assert password not in "\n".join(c for cmds in planned.values() for c in cmds)
    assert password == grafana_admin_password(Path(SECRETS_DIR))
    assert os.stat(Path(SECRETS_DIR) / GRAFANA_FILE).st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="--diff would print secrets"):
        grafana_plan(config={"DIFF": True})


def test_a_monitoring_host_that_allows_ui_networks_opens_grafanas_port_to_them_alone():
    planned = grafana_plan({"monitoring_ui_allow_from": ["192.0.2.0/24"]})
    assert "Firewall: allow TCP 3000 (Grafana)" in planned


def test_hosts_outside_the_monitoring_group_get_no_grafana():
    planned = plan(monitoring, dict(MONITOR))
    assert not [name for name in planned if "Grafana" in name or "grafana" in name]


# -- a converged host: a second run changes nothing -----------------------------------------


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def dropin_text() -> str:
    return render(
        "monitoring/grafana.conf.j2",
        password_file=PASSWORD_FILE,
        credential="admin-password",
        password_reference=f"$__file{{/run/credentials/{GRAFANA_UNIT}/admin-password}}",
        port=3000,
        provisioning="/etc/llmhost-grafana/provisioning",
        data_dir="/var/lib/grafana",
        log_dir="/var/log/grafana",
    )


def converged_contents() -> dict[str, str]:
    """Every file of Grafana's a first run writes, from the same renders the role uses."""
    contents = {item.path: item.content for item in provisioning_files(settings())}
    return contents | {
        SOURCES: render(
            "monitoring/grafana.sources.j2", url="https://apt.grafana.com", keyring=KEYRING
        ),
        PREFERENCES: render("monitoring/grafana.pref.j2", version="13.2.3"),
        DROPIN: dropin_text(),
        PASSWORD_FILE: grafana_admin_password(Path(SECRETS_DIR)) + "\n",
    }


def converged_facts(
    contents: dict[str, str] | None = None, extra_dashboards: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The facts of a host the first run converged (its files: ``contents``)."""
    contents = converged_contents() if contents is None else contents
    paths = [*contents, *(f"{DASHBOARDS}/{name}" for name in extra_dashboards)]
    owned = {
        p: {"mode": 600 if p == PASSWORD_FILE else 644, "user": "root", "group": "root"}
        for p in paths
    }
    directories = [*provisioning_directories(), APT_KEYRINGS_DIR, DROPIN_DIR]
    return {
        "File": per_argument(
            {f"path={p}": stat for p, stat in owned.items()}
            | {"path=/var/lib/grafana/grafana.db": {"mode": 640, "user": "grafana"}}
        ),
        "Sha1File": per_argument({f"path={p}": sha1(c) for p, c in contents.items()}),
        "Directory": per_argument(
            {f"path={d}": {"mode": 755, "user": "root", "group": "root"} for d in directories}
        ),
        "DirectoryEntries": per_argument(
            {f"path={DASHBOARDS}": [p.name for p in dashboard_sources()] + list(extra_dashboards)}
        ),
        "DebPackages": {"grafana": ["13.2.3"], "gpg": ["2.2.40-1.1"]},
        "KeyringFingerprints": [KEY_FINGERPRINT],
        "SystemdStatus": {GRAFANA_UNIT: True},
        "SystemdEnabled": {GRAFANA_UNIT: True},
    }


def test_the_second_run_on_a_converged_host_changes_nothing():
    planned = grafana_plan(facts=converged_facts())
    changing = {
        name: cmds for name, cmds in planned.items() if cmds and not name.startswith(CONDITIONAL)
    }
    assert changing == {}
    # The conditional ones are triggered only by operations that are noops here.
    key = f"Grafana's signing key {KEY_FINGERPRINT} alone, from https://apt.grafana.com/gpg.key"
    assert planned[key] == []
    assert planned["Grafana: admin password (root only, handed to the unit as a credential)"] == []


def test_a_stale_dashboard_is_removed_and_a_changed_one_uploaded_without_a_restart():
    contents = converged_contents()
    contents[f"{DASHBOARDS}/runtime.json"] = "{}"  # an older version of it
    planned = grafana_plan(facts=converged_facts(contents, extra_dashboards=("old.json",)))
    assert commands(planned, f"Grafana: {DASHBOARDS}/old.json is no dashboard") == [
        f"rm -f {DASHBOARDS}/old.json"
    ]
    assert commands(planned, "Grafana: dashboards/runtime.json")[1:] == [
        f"chown root:root {DASHBOARDS}/runtime.json",
        f"chmod 644 {DASHBOARDS}/runtime.json",
    ]
    assert commands(planned, f"{GRAFANA_UNIT}: running and enabled") == []


def test_a_new_admin_password_restarts_grafana_and_is_set_in_its_database_from_stdin():
    contents = converged_contents()
    contents[PASSWORD_FILE] = "an-older-password-of-before\n"
    planned = grafana_plan(facts=converged_facts(contents))
    assert commands(planned, f"{GRAFANA_UNIT}: running and enabled") == [
        f"systemctl restart {GRAFANA_UNIT}"
    ]
    (reset,) = commands(planned, "Grafana: the new admin password set in its database")
    assert reset == (
        "runuser -u grafana -- grafana-cli admin reset-admin-password --password-from-stdin "
        f"< {PASSWORD_FILE} >/dev/null"
    )


def test_a_changed_datasource_restarts_grafana():
    contents = converged_contents()
    contents["/etc/llmhost-grafana/provisioning/datasources/llmhost.yaml"] = "old\n"
    planned = grafana_plan(facts=converged_facts(contents))
    assert commands(planned, f"{GRAFANA_UNIT}: running and enabled") == [
        f"systemctl restart {GRAFANA_UNIT}"
    ]


def test_without_a_database_yet_the_password_is_taken_at_first_start_and_not_reset():
    planned = grafana_plan()
    assert not [name for name in planned if "the new admin password" in name]


# -- the mirror, and Grafana turned off -----------------------------------------------------


def test_a_mirror_replaces_grafanas_repository_for_the_key_and_the_packages():
    mirror = "http://apt-mirror.internal.example/grafana/"
    planned = grafana_plan({"monitoring_grafana_apt_mirror": mirror})
    (key,) = commands(planned, "Grafana's signing key")
    assert "url=http://apt-mirror.internal.example/grafana/gpg.key" in key
    repository = "http://apt-mirror.internal.example/grafana"
    assert f"APT: Grafana's repository {repository} (signed-by its key)" in planned
    assert not [name for name in planned if "apt.grafana.com" in name]
    assert "apt.grafana.com" not in key.replace(UNREACHABLE, "").replace(ROTATED, "")
    sources = render("monitoring/grafana.sources.j2", url=mirror.rstrip("/"), keyring=KEYRING)
    assert "URIs: http://apt-mirror.internal.example/grafana\n" in sources


def test_grafana_turned_off_installs_nothing_and_stops_a_running_one():
    fresh = grafana_plan_off()
    assert not [name for name in fresh if name.startswith(("Install Grafana", "Grafana's signing"))]
    assert fresh[f"{GRAFANA_UNIT}: not running (monitoring_grafana is false)"] == []
    running = grafana_plan_off(
        facts={
            "SystemdStatus": {GRAFANA_UNIT: True},
            "SystemdEnabled": {GRAFANA_UNIT: True},
            "File": per_argument(
                {"path=/etc/llmhost/firewall.d/42-monitoring-grafana.nft": {"mode": 640}}
            ),
        }
    )
    assert running[f"{GRAFANA_UNIT}: not running (monitoring_grafana is false)"] == [
        f"systemctl stop {GRAFANA_UNIT}",
        f"systemctl disable {GRAFANA_UNIT}",
    ]
    assert running["Firewall: Grafana closed (monitoring_grafana is false)"] == [
        "rm -f /etc/llmhost/firewall.d/42-monitoring-grafana.nft"
    ]


def grafana_plan_off(facts: dict[str, Any] | None = None) -> dict[str, list[str]]:
    return plan(
        monitoring,
        {**MONITOR, "monitoring_grafana": False},
        groups=["monitoring"],
        facts=facts,
    )


VERSION_KEY, MIRROR_KEY = "monitoring_grafana_version", "monitoring_grafana_apt_mirror"


@pytest.mark.parametrize(
    ("data", "key", "said"),
    [
        ({"monitoring_grafana_version": "13.2.3; rm -rf /"}, VERSION_KEY, "version"),
        ({"monitoring_grafana_version": ""}, VERSION_KEY, "version"),
        ({"monitoring_grafana_apt_mirror": "ftp://mirror/grafana"}, MIRROR_KEY, "scheme"),
        ({"monitoring_grafana_apt_mirror": "https://u:pw@mirror/g"}, MIRROR_KEY, "credentials"),
        ({"monitoring_grafana_port": 9090}, "monitoring_grafana_port", "also"),
        ({"monitoring_grafana_port": 70000}, "monitoring_grafana_port", "not a TCP port"),
        ({"monitoring_grafana": "yes"}, "monitoring_grafana", "expected bool"),
    ],
)  # fmt: skip
def test_bad_grafana_settings_are_refused_before_any_host_is_touched(data, key, said):
    with pytest.raises(ConfigError) as raised:
        grafana_plan(data)
    assert raised.value.key == key
    assert said in str(raised.value)
    assert "pw@" not in str(raised.value)


# -- the admin password's file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "mode", "said"),
    [
        ('{"admin_password": "Pw9-GrafanaAdminPass_0123"', 0o600, "not JSON"),
        ('{"admin_password": "short"}', 0o600, "5 characters long"),
        ('{"admin_password": "Pw9-GrafanaAdminPass_0123", "u": "x"}', 0o600, "does not know: u"),
        ('{"password": "Pw9-GrafanaAdminPass_0123"}', 0o600, "does not know: password"),
        ('{"admin_password": "Pw9-GrafanaAdminPass_0123"}', 0o644, "chmod 600"),
    ],
)  # fmt: skip
def test_a_bad_grafana_secrets_file_is_refused_without_showing_the_password(
    tmp_path, content, mode, said
):
    path = tmp_path / GRAFANA_FILE
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(ConfigError) as raised:
        grafana_admin_password(tmp_path)
    assert said in str(raised.value) and GRAFANA_FILE in str(raised.value)
    assert "GrafanaAdminPass" not in str(raised.value)


def test_the_password_is_made_once_private_and_read_back(tmp_path):
    made = grafana_admin_password(tmp_path / "secrets")
    path = tmp_path / "secrets" / GRAFANA_FILE
    assert json.loads(path.read_text()) == {"admin_password": made}
    assert path.stat().st_mode & 0o777 == 0o600 and len(made) >= 32
    assert grafana_admin_password(tmp_path / "secrets") == made


# -- the provisioning and configuration files, rendered ---------------------------------------


def test_the_datasource_is_the_local_prometheus_under_the_fixed_uid():
    (datasource,) = [f for f in provisioning_files(settings()) if "datasources" in f.path]
    document = yaml.safe_load(datasource.content)
    (source,) = document["datasources"]
    assert source["uid"] == DATASOURCE_UID == "llmhost-prometheus"
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    assert source["isDefault"] is True and source["editable"] is False
    assert source["jsonData"]["timeInterval"] == "15s"
    assert datasource.restart
    other = [
        f
        for f in provisioning_files(
            settings({"monitoring_prometheus_port": 9190, "monitoring_scrape_interval_s": 30})
        )
        if "datasources" in f.path
    ]
    assert (
        "url: http://127.0.0.1:9190\n" in other[0].content
        and "timeInterval: 30s" in other[0].content
    )


def test_the_dashboard_provider_reads_our_directory_and_keeps_no_edit():
    (provider,) = [
        f for f in provisioning_files(settings()) if f.path.endswith("dashboards/llmhost.yaml")
    ]
    (entry,) = yaml.safe_load(provider.content)["providers"]
    assert entry["options"]["path"] == DASHBOARDS == "/etc/llmhost-grafana/dashboards"
    assert entry["type"] == "file" and entry["allowUiUpdates"] is False
    assert entry["disableDeletion"] is True
    dashboards = [f for f in provisioning_files(settings()) if f.path.startswith(DASHBOARDS)]
    assert sorted(Path(f.path).name for f in dashboards) == [p.name for p in dashboard_sources()]
    assert not any(f.restart for f in dashboards), "dashboards are polled, not read at start"


def test_the_dropin_sets_only_what_is_needed_and_no_secret():
    password = grafana_admin_password(Path(SECRETS_DIR))
    text = dropin_text()
    assert password not in text
    lines = text.splitlines()
    assert f"LoadCredential=admin-password:{PASSWORD_FILE}" in lines
    for setting in [
        f"GF_SECURITY_ADMIN_PASSWORD=$__file{{/run/credentials/{GRAFANA_UNIT}/admin-password}}",
        "GF_SERVER_HTTP_PORT=3000",
        "GF_PATHS_PROVISIONING=/etc/llmhost-grafana/provisioning",
        "GF_AUTH_ANONYMOUS_ENABLED=false",
        "GF_ANALYTICS_REPORTING_ENABLED=false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        "GF_PLUGINS_PREINSTALL_DISABLED=true",
    ]:
        assert f'Environment="{setting}"' in lines, setting
    assert "ProtectSystem=strict" in lines and "NoNewPrivileges=yes" in lines
    assert "ReadWritePaths=/var/lib/grafana -/var/log/grafana" in lines
    assert not [line for line in lines if line.startswith("ExecStart")], "the vendor's command"


def test_the_repository_is_signed_by_its_keyring_and_the_version_pinned():
    sources = render(
        "monitoring/grafana.sources.j2", url="https://apt.grafana.com", keyring=KEYRING
    )
    assert sources.splitlines()[1:] == [
        "Types: deb",
        "URIs: https://apt.grafana.com",
        "Suites: stable",
        "Components: main",
        "Signed-By: /etc/apt/keyrings/grafana.gpg",
    ]
    preferences = render("monitoring/grafana.pref.j2", version="13.2.3")
    assert [line for line in preferences.splitlines() if not line.startswith("#")] == [
        "Package: grafana",
        "Pin: version 13.2.3",
        "Pin-Priority: 1001",
    ]


# -- the signing key: roles._common's check (tests/unit/test_apt_key.py), in Grafana's words --


@pytest.mark.parametrize("mirror", [None, "http://apt-mirror.internal.example/grafana"])
def test_the_signing_key_is_checked_by_the_shared_script_with_grafanas_pin_and_words(mirror):
    planned = grafana_plan({"monitoring_grafana_apt_mirror": mirror} if mirror else {})
    url = f"{mirror or 'https://apt.grafana.com'}/gpg.key"
    (key,) = commands(planned, "Grafana's signing key")
    assert key == apt_key_script(url, KEY_FINGERPRINT, KEYRING, "Grafana", UNREACHABLE, ROTATED)
    assert "monitoring_grafana_apt_mirror" in UNREACHABLE and "base_http_proxy" in UNREACHABLE
    assert "Grafana's own announcement" in ROTATED
    assert "KEY_FINGERPRINT in roles/monitoring/grafana.py" in ROTATED
