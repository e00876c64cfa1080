"""Grafana on `monitoring` hosts: Grafana's own package, llmhost's dashboards from files.

preflight  the version pin and the mirror URL (offline: ``check_grafana``, from the role's
           ``check``); the admin password from the secrets directory
configure  first, since it needs nothing of the package: Grafana's provisioning directory
           (a data source with a fixed uid, this host's Prometheus; a dashboard provider;
           the dashboards, templates/monitoring/dashboards/*.json), root-owned, world-readable
install    Grafana's signing key (downloaded, checked by fingerprint, exported alone: the
           published key file also carries retired keys), the repository with ``signed-by``,
           the package at the pinned version (APT preferences hold it there)
configure  a drop-in over the vendor unit: the port, the provisioning path, nothing that
           phones out, the admin password as a systemd credential, hardening
service    running; restarted when a file it reads at start changed; the admin password set
           in Grafana's database when it changed; the port open to `monitoring_ui_allow_from`

Why Grafana's repository and not Debian's: Debian does not package Grafana. Why settings
as GF_* variables in a drop-in: grafana.ini is the package's conffile (an edit there
becomes a dpkg prompt at every upgrade), and the package's postinst chowns everything
under /etc/grafana to root:grafana 0640 on every upgrade, so our files live in a
directory of their own, which Grafana is pointed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from llmhost.endpoints import GRAFANA_REPOSITORY, Call
from llmhost.errors import ConfigError
from llmhost.onhost.layout import CONFIG_DIR
from llmhost.paths import TEMPLATES
from llmhost.render import render
from llmhost.secrets import grafana_admin_password, secrets_directory
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_url, on_host
from roles._common.egress import apt_through_proxy
from roles._common.facts import DirectoryEntries, PackageStatus
from roles._common.operations import (
    APT_KEYRINGS_DIR,
    apt_key_tools,
    apt_key_trusted,
    firewall_only_from,
    reload_firewall,
    secret_upload_options,
    wait_for_port,
)
from roles.monitoring.defaults import MonitoringSettings

GRAFANA_UNIT = "grafana-server.service"
REPOSITORY = "https://apt.grafana.com"
# Grafana's APT signing key (since its 2023 rotation), as several independent projects pin
# it. https://apt.grafana.com/gpg.key also carries the keys it replaced.
KEY_FINGERPRINT = "B53AE77BADB630A683046005963FA27710458545"
KEYRING = f"{APT_KEYRINGS_DIR}/grafana.gpg"
SOURCES = "/etc/apt/sources.list.d/grafana.sources"
PREFERENCES = "/etc/apt/preferences.d/llmhost-grafana.pref"
# Ours, outside /etc/grafana (whose files the package's postinst re-owns at every upgrade).
HOME = "/etc/llmhost-grafana"
PROVISIONING = f"{HOME}/provisioning"
DASHBOARDS = f"{HOME}/dashboards"
# Grafana warns about each provisioning directory it does not find.
PROVISIONING_KINDS = ("datasources", "dashboards", "plugins", "alerting")
DATASOURCE_UID = "llmhost-prometheus"
PASSWORD_FILE = f"{CONFIG_DIR}/grafana-admin-password"  # root only; a credential of the unit
CREDENTIAL = "admin-password"
DATA_DIR = "/var/lib/grafana"  # the package's (/etc/default/grafana-server)
LOG_DIR = "/var/log/grafana"
DATABASE = f"{DATA_DIR}/grafana.db"
DROPIN = f"/etc/systemd/system/{GRAFANA_UNIT}.d/llmhost.conf"
FIREWALL = "42-monitoring-grafana"
DASHBOARD_SOURCES = TEMPLATES / "monitoring" / "dashboards"
# What the package version may hold (Debian policy: digits first, then these).
VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")

UNREACHABLE = (
    "Give the host a route to it (base_http_proxy, base_no_proxy), or set "
    "monitoring_grafana_apt_mirror to an internal mirror of https://apt.grafana.com, "
    "or monitoring_grafana: false."
)
ROTATED = (
    "If Grafana has rotated its key, check the new fingerprint against Grafana's own "
    "announcement before changing KEY_FINGERPRINT in roles/monitoring/grafana.py."
)


@dataclass(frozen=True)
class WantedFile:
    """A file of Grafana's provisioning, as the host must hold it."""

    path: str
    content: str
    restart: bool  # read by Grafana at start only (dashboards are polled)


def check_grafana(name: str, settings: MonitoringSettings) -> None:
    """The Grafana settings of a `monitoring` host; no host is contacted."""
    if not settings.monitoring_grafana:
        return
    version = settings.monitoring_grafana_version
    if not VERSION.fullmatch(version):
        raise ConfigError(
            f"{version!r} is not a package version",
            key="monitoring_grafana_version",
            fix="give the exact version `apt-cache policy grafana` lists, e.g. 13.2.3",
            host=name,
        )
    mirror = settings.monitoring_grafana_apt_mirror
    if mirror is not None:
        check_url(name, "monitoring_grafana_apt_mirror", mirror)
        parts = urlsplit(mirror)
        if parts.username or parts.password:
            raise ConfigError(
                "the mirror URL carries credentials, which would be in a sources file every "
                "user of the host can read",
                key="monitoring_grafana_apt_mirror",
                fix="give the URL without them and put them in /etc/apt/auth.conf.d/ "
                "(APT's place for repository credentials)",
                host=name,
            )


def repository_url(settings: MonitoringSettings) -> str:
    return (settings.monitoring_grafana_apt_mirror or REPOSITORY).rstrip("/")


def grafana_endpoints(settings: MonitoringSettings) -> list[Call]:
    """For the residency audit, on a `monitoring` host: Grafana's repository (its key, the
    package), `monitoring_grafana_apt_mirror` or Grafana's own; none with Grafana off."""
    if not settings.monitoring_grafana:
        return []
    return [
        apt_through_proxy(
            GRAFANA_REPOSITORY,
            repository_url(settings),
            "monitoring_grafana_apt_mirror",
            note="APT: Grafana's key and package",
        )
    ]


def dashboard_sources() -> list[Path]:
    return sorted(DASHBOARD_SOURCES.glob("*.json"))


def provisioning_files(settings: MonitoringSettings) -> list[WantedFile]:
    """Every file of Grafana's provisioning directory, none of them secret."""
    datasource = render(
        "monitoring/grafana-datasource.yaml.j2",
        uid=DATASOURCE_UID,
        prometheus_port=settings.monitoring_prometheus_port,
        interval=settings.monitoring_scrape_interval_s,
    )
    provider = render("monitoring/grafana-dashboards.yaml.j2", dashboards_dir=DASHBOARDS)
    return [
        WantedFile(f"{PROVISIONING}/datasources/llmhost.yaml", datasource, restart=True),
        WantedFile(f"{PROVISIONING}/dashboards/llmhost.yaml", provider, restart=True),
        *(
            WantedFile(f"{DASHBOARDS}/{path.name}", path.read_text(encoding="utf-8"), False)
            for path in dashboard_sources()
        ),
    ]


def provisioning_directories() -> list[str]:
    return [HOME, PROVISIONING, *(f"{PROVISIONING}/{k}" for k in PROVISIONING_KINDS), DASHBOARDS]


# -- the deploy -------------------------------------------------------------------------------


def grafana(settings: MonitoringSettings) -> None:
    """Grafana on this monitoring host, or, with ``monitoring_grafana`` false, none running."""
    if not settings.monitoring_grafana:
        absent()
        return
    with on_host(host.name):
        password = grafana_admin_password(secrets_directory(host.data, host.name))
    provisioned = provisioning(settings)
    install(settings)
    password_file, dropin = unit_configuration(settings, password)
    service(settings, [*provisioned, password_file, dropin], dropin, password_file)
    firewall(settings)


def provisioning(settings: MonitoringSettings) -> list[OperationMeta]:
    """The provisioning files (and no stale dashboard); returns those read at start only."""
    for directory in provisioning_directories():
        files.directory(
            name=f"{directory}: Grafana's provisioning",
            path=directory,
            user="root",
            group="root",
            mode="0755",
        )
    wanted = provisioning_files(settings)
    restart = []
    for item in wanted:
        put = checked.put(
            name=f"Grafana: {item.path.removeprefix(HOME + '/')}",
            src=StringIO(item.content),
            dest=item.path,
            user="root",
            group="root",
            mode="0644",
            create_remote_dir=False,
        )
        if item.restart:
            restart.append(put)
    ours = {item.path.rsplit("/", 1)[1] for item in wanted if item.path.startswith(DASHBOARDS)}
    present: list[str] = host.get_fact(DirectoryEntries, path=DASHBOARDS)
    for stale in sorted(set(present) - ours):
        files.file(
            name=f"Grafana: {DASHBOARDS}/{stale} is no dashboard of llmhost's",
            path=f"{DASHBOARDS}/{stale}",
            present=False,
        )
    return restart


def install(settings: MonitoringSettings) -> None:
    """The key, the repository, the pin, the package: each only once the one before holds."""
    apt_key_tools("Grafana")
    url = repository_url(settings)
    trusted = apt_key_trusted(
        name=f"Grafana's signing key {KEY_FINGERPRINT} alone, from {url}/gpg.key",
        url=f"{url}/gpg.key",
        fingerprint=KEY_FINGERPRINT,
        keyring=KEYRING,
        owner="Grafana",
        unreachable=UNREACHABLE,
        rotated=ROTATED,
    )
    sources = put_template(
        name=f"APT: Grafana's repository {url} (signed-by its key)",
        path="monitoring/grafana.sources.j2",
        dest=SOURCES,
        mode="0644",
        url=url,
        keyring=KEYRING,
    )
    version = settings.monitoring_grafana_version
    pin = put_template(
        name=f"APT: Grafana pinned to {version}",
        path="monitoring/grafana.pref.j2",
        dest=PREFERENCES,
        mode="0644",
        version=version,
    )
    installed = host.get_fact(PackageStatus, packages=["grafana"]).get("grafana")
    checked.packages(
        name=f"Install Grafana {version}",
        packages=[f"grafana={version}"],
        update=version != installed or any(op.will_change for op in (trusted, sources, pin)),
        extra_install_args="--no-install-recommends",
    )


def unit_configuration(
    settings: MonitoringSettings, password: str
) -> tuple[OperationMeta, OperationMeta]:
    """The admin password (a root-only file, the unit's credential) and our drop-in."""
    password_file = checked.put(
        **secret_upload_options(),
        name="Grafana: admin password (root only, handed to the unit as a credential)",
        src=StringIO(password + "\n"),
        dest=PASSWORD_FILE,
        user="root",
        group="root",
        mode="0600",
        create_remote_dir=False,  # /etc/llmhost is base's
    )
    directory = DROPIN.rsplit("/", 1)[0]
    files.directory(name=f"{directory}: drop-ins", path=directory, mode="0755")
    dropin = put_template(
        name="Grafana: drop-in (port, provisioning, nothing phones out, hardening)",
        path="monitoring/grafana.conf.j2",
        dest=DROPIN,
        mode="0644",
        password_file=PASSWORD_FILE,
        credential=CREDENTIAL,
        password_reference=f"$__file{{/run/credentials/{GRAFANA_UNIT}/{CREDENTIAL}}}",
        port=settings.monitoring_grafana_port,
        provisioning=PROVISIONING,
        data_dir=DATA_DIR,
        log_dir=LOG_DIR,
    )
    return password_file, dropin


def service(
    settings: MonitoringSettings,
    restart: list[OperationMeta],
    dropin: OperationMeta,
    password_file: OperationMeta,
) -> None:
    systemd.daemon_reload(name="systemd: load Grafana's drop-in", _if=dropin.did_change)
    started = checked.service(
        name=f"{GRAFANA_UNIT}: running and enabled",
        service=GRAFANA_UNIT,
        running=True,
        enabled=True,
        restarted=any(op.will_change for op in restart),
    )
    # A first start migrates Grafana's database: give it time before calling it failed.
    server.shell(
        name="Grafana: listening",
        commands=[wait_for_port(settings.monitoring_grafana_port, GRAFANA_UNIT, timeout=120)],
        _if=started.did_change,
    )
    if host.get_fact(File, path=DATABASE):
        # Grafana takes the configured password only when it creates its database; after
        # that a new one is set in the database, from stdin (never argv).
        server.shell(
            name="Grafana: the new admin password set in its database",
            commands=[
                "runuser -u grafana -- grafana-cli admin reset-admin-password "
                f"--password-from-stdin < {PASSWORD_FILE} >/dev/null"
            ],
            _if=password_file.did_change,
        )


def firewall(settings: MonitoringSettings) -> None:
    rules = firewall_only_from(
        "monitoring",
        "Grafana",
        FIREWALL,
        [settings.monitoring_grafana_port],
        settings.monitoring_ui_allow_from,
        closed="Grafana closed (no monitoring_ui_allow_from: reach it through an SSH tunnel)",
    )
    reload_firewall(rules)


def absent() -> None:
    """Grafana turned off: stopped and its port closed; the package and its data are kept."""
    checked.service(
        name=f"{GRAFANA_UNIT}: not running (monitoring_grafana is false)",
        service=GRAFANA_UNIT,
        running=False,
        enabled=False,
    )
    closed = "Grafana closed (monitoring_grafana is false)"
    reload_firewall(firewall_only_from("monitoring", "Grafana", FIREWALL, [], [], closed=closed))
