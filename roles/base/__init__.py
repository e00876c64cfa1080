"""Role base: the ground every other role stands on.

preflight  assert the inventory data (region, hardware) and the platform; change nothing
install    egress (proxy or mirror) and package pins first, then chrony, nftables and
           ca-certificates
configure  the llmhost user and directories, egress env, trust in the llmhost CA,
           time sources, sshd, firewall
service    chrony, sshd (reload only), the llmhost firewall unit
"""

from __future__ import annotations

import getpass
import re
from io import StringIO
from shlex import quote
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from llmhost.endpoints import EGRESS_PROXY, NTP, PACKAGE_MIRROR, Call, call_via_proxy
from llmhost.onhost.layout import CONFIG_DIR, LLMHOST_CA, SERVICE_USER, STATE_DIR
from llmhost.packagelock import APT_PINS_FILE, apt_preferences, read_lock
from llmhost.secrets import certificate_authority, secrets_directory
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.facts import PackageStatus
from roles._common.operations import (
    FIREWALL_RULES_DIR,
    FIREWALL_UNIT,
    firewall_rules,
    reload_firewall,
    secret_upload_options,
)
from roles.base.defaults import BaseSettings
from roles.base.facts import Platform, PlatformDict, SshdListenPorts
from roles.base.preflight import DataSources, HostIdentity, check_inventory, check_platform

PACKAGES = ["chrony", "nftables", "ca-certificates"]
# What a Debian host's own APT sources name, when `base_apt_mirror` does not replace them.
DISTRIBUTION_ARCHIVES = (
    "http://deb.debian.org/debian",
    "http://security.debian.org/debian-security",
)
APT_PROXY_CONF = "/etc/apt/apt.conf.d/80llmhost-proxy"
VENDOR_APT_SOURCES = (
    "/etc/apt/sources.list.d/debian.sources",
    "/etc/apt/sources.list.d/ubuntu.sources",
)
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-llmhost.conf"
# What `sshd -T` must report once the drop-in is in effect.
SSHD_EXPECTED = {
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "pubkeyauthentication": "yes",
    "authenticationmethods": "publickey",
}
SSHD_ROOT_LOGIN = {"prohibit-password": "without-password", "no": "no"}
CHRONY_CONTAINER_DROPIN = "/etc/systemd/system/chrony.service.d/llmhost-container.conf"
FIREWALL_CONFIG = f"{CONFIG_DIR}/firewall.nft"


@deploy("llmhost base")
def base() -> None:
    identity, platform = preflight()
    install(identity.settings, platform)
    time_config = configure(identity.settings, platform)
    service(identity.settings, time_config)


def data_sources() -> DataSources:
    """Each part of the inventory that gives the host data, apart (pyinfra merges them)."""
    inventory = host.inventory
    return DataSources(
        host=inventory.get_host_data(host.name),
        groups={group: inventory.get_group_data(group) for group in host.groups},
        everyone=inventory.get_data(),
        override=inventory.get_override_data(),
    )


def check() -> HostIdentity:
    """The host's inventory data, with no host contacted."""
    return check_inventory(host.name, host.data, data_sources(), host.groups)


def endpoints() -> list[Call]:
    """What the host calls for packages and time: the proxy, the APT sources, NTP servers."""
    settings = from_data(BaseSettings, host.data, host.name)
    proxy = settings.base_http_proxy
    calls = [Call(EGRESS_PROXY, proxy, "base_http_proxy")] if proxy else []
    direct = apt_direct_hosts(settings.base_no_proxy)  # what APT fetches without the proxy
    mirrors = [
        (url, key)
        for url, key in (
            (settings.base_apt_mirror, "base_apt_mirror"),
            (settings.base_apt_security_mirror, "base_apt_security_mirror"),
        )
        if url
    ]
    note = "APT"
    if not settings.base_apt_mirror:
        mirrors = [(url, "base_apt_mirror") for url in DISTRIBUTION_ARCHIVES]
        note = "unset: the host keeps its own APT sources, Debian's by default"
    calls += [
        call_via_proxy(PACKAGE_MIRROR, url, key, proxy, direct, note=note) for url, key in mirrors
    ]
    calls += [
        Call(NTP, server, "base_ntp_servers", note="chrony") for server in settings.base_ntp_servers
    ]
    return calls


def preflight() -> tuple[HostIdentity, PlatformDict]:
    """Validate the inventory data before any fact is gathered, then the platform."""
    identity = check()
    # Without sudo: sudo clears SSH_CONNECTION, the deploy's own address.
    platform = host.get_fact(Platform, _sudo=False)
    check_platform(host.name, platform, identity.settings)
    return identity, platform


def install(settings: BaseSettings, platform: PlatformDict) -> None:
    apt_sources = configure_apt_egress(settings, platform)
    pin_packages(settings)
    installed = host.get_fact(PackageStatus, packages=PACKAGES)
    missing = [name for name in PACKAGES if name not in installed]
    checked.packages(
        name="Install base packages (time sync, firewall, CA store)",
        packages=PACKAGES,
        update=bool(missing) or any(op.will_change for op in apt_sources),
        no_recommends=True,
    )


def pin_packages(settings: BaseSettings) -> None:
    """APT preferences from `base_package_lock`, before any package is installed."""
    lock = settings.base_package_lock
    if not lock:
        files.file(name="APT: no package lock", path=APT_PINS_FILE, present=False)
        return
    packages = read_lock(lock, host.name)
    checked.put(
        name=f"APT: {len(packages)} packages pinned by {lock}",
        src=StringIO(apt_preferences(packages, lock)),
        dest=APT_PINS_FILE,
        mode="0644",
    )


def apt_direct_hosts(no_proxy: list[str]) -> list[str]:
    """The `base_no_proxy` entries APT understands: plain host names (not IPs, CIDRs, .domains)."""
    return [
        entry
        for entry in no_proxy
        if re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", entry)
        and not re.fullmatch(r"[0-9.]+", entry)
    ]


def proxy_upload_options(settings: BaseSettings) -> dict[str, Any]:
    """A proxy URL with a user and password in it is uploaded as a secret."""
    proxy = settings.base_http_proxy
    return secret_upload_options() if proxy and urlsplit(proxy).password else {}


def configure_apt_egress(settings: BaseSettings, platform: PlatformDict) -> list[OperationMeta]:
    """Point APT at the proxy and/or mirror; returns the operations that may change sources."""
    proxy = (
        put_template(
            **proxy_upload_options(settings),
            name="APT: egress proxy",
            path="base/apt-proxy.conf.j2",
            dest=APT_PROXY_CONF,
            mode="0640",
            proxy=settings.base_http_proxy,
            no_proxy=apt_direct_hosts(settings.base_no_proxy),
        )
        if settings.base_http_proxy
        else files.file(name="APT: no egress proxy", path=APT_PROXY_CONF, present=False)
    )
    if not settings.base_apt_mirror:
        return [proxy]
    sources = put_template(
        name="APT: mirror is the only source",
        path="base/sources.list.j2",
        dest="/etc/apt/sources.list",
        mode="0644",
        mirror=settings.base_apt_mirror,
        security_mirror=settings.base_apt_security_mirror,
        codename=platform["os_codename"],
        components=settings.base_apt_components,
    )
    vendor = [
        files.file(name=f"APT: drop vendor source {path}", path=path, present=False)
        for path in VENDOR_APT_SOURCES
    ]
    return [proxy, sources, *vendor]


def configure(settings: BaseSettings, platform: PlatformDict) -> TimeConfig:
    """Write every file; returns chrony's, whose change needs a restart in `service()`."""
    service_user()
    put_template(
        **proxy_upload_options(settings),
        name="Egress environment for llmhost units and tools",
        path="base/egress.env.j2",
        dest=f"{CONFIG_DIR}/egress.env",
        group=SERVICE_USER,
        mode="0640",
        proxy=settings.base_http_proxy,
        no_proxy=settings.base_no_proxy,
    )
    trust_llmhost_ca()
    time_config = time_sources(settings, platform)
    sshd_hardening()
    firewall(settings)
    return time_config


def service_user() -> None:
    checked.group(name="Group llmhost", group=SERVICE_USER, system=True)
    checked.user(
        name="System user llmhost (runs every llmhost service)",
        user=SERVICE_USER,
        group=SERVICE_USER,
        system=True,
        home=STATE_DIR,
        create_home=False,
        shell="/usr/sbin/nologin",
    )
    files.directory(
        name=f"{CONFIG_DIR}: configuration, readable by the service user",
        path=CONFIG_DIR,
        user="root",
        group=SERVICE_USER,
        mode="0750",
    )
    files.directory(
        name=f"{STATE_DIR}: state, owned by the service user",
        path=STATE_DIR,
        user=SERVICE_USER,
        group=SERVICE_USER,
        mode="0750",
    )


class TimeConfig(NamedTuple):
    """chrony's files: a change to either restarts it; a drop-in change reloads systemd first."""

    config: OperationMeta
    dropin: OperationMeta


def trust_llmhost_ca() -> None:
    """Every host trusts the llmhost CA, which signs the registry's (and later services') TLS."""
    ca = certificate_authority(secrets_directory(host.data, host.name))
    certificate = checked.put(
        name="Trust the llmhost CA",
        src=StringIO(ca.certificate_pem),
        dest=LLMHOST_CA,
        user="root",
        group="root",
        mode="0644",
        create_remote_dir=False,
    )
    server.shell(
        name="Rebuild the system trust store",
        commands=["update-ca-certificates --fresh >/dev/null"],
        _if=certificate.did_change,
    )


def time_sources(settings: BaseSettings, platform: PlatformDict) -> TimeConfig:
    in_container = platform["container"] != "none"
    config = put_template(
        name="chrony: time sources",
        path="base/chrony.conf.j2",
        dest="/etc/chrony/chrony.conf",
        mode="0644",
        servers=settings.base_ntp_servers,
        in_container=in_container,
    )
    if in_container:
        files.directory(
            name="chrony: drop-in directory",
            path=CHRONY_CONTAINER_DROPIN.rsplit("/", 1)[0],
            mode="0755",
        )
        dropin = put_template(
            name="chrony: follow time without setting the clock (container)",
            path="base/chrony-container.conf.j2",
            dest=CHRONY_CONTAINER_DROPIN,
            mode="0644",
        )
    else:
        dropin = files.file(
            name="chrony: no container drop-in", path=CHRONY_CONTAINER_DROPIN, present=False
        )
    return TimeConfig(config, dropin)


def sshd_hardening() -> None:
    """Key-only sshd, validated with ``sshd -t`` before a reload; a bad file is removed.

    A reload keeps every open session (this deploy's included) on the old settings.
    """
    deploy_user = host.data.get("ssh_user") or getpass.getuser()
    # Root may log in with a key only when it is how this deploy logs in; else never.
    permit_root_login = "prohibit-password" if deploy_user == "root" else "no"
    files.directory(name="sshd: drop-in directory", path=SSHD_DROPIN.rsplit("/", 1)[0], mode="0755")
    dropin = put_template(
        name="sshd: key-only access",
        path="base/sshd-hardening.conf.j2",
        dest=SSHD_DROPIN,
        mode="0644",
        permit_root_login=permit_root_login,
    )
    expected = {**SSHD_EXPECTED, "permitrootlogin": SSHD_ROOT_LOGIN[permit_root_login]}
    checks = " && ".join(f"grep -qx '{k} {v}' <<<\"$effective\"" for k, v in expected.items())
    server.shell(
        name="sshd: validate, check the drop-in takes effect, reload",
        commands=[
            f"sshd -t || {{ rm -f {quote(SSHD_DROPIN)}; "
            f"echo 'sshd rejected {SSHD_DROPIN}; removed' >&2; exit 1; }}",
            # sshd keeps the first value it reads: an earlier file can silently win.
            f'effective=$(sshd -T) && {{ {checks}; }} || {{ echo "sshd settings before '
            f'{SSHD_DROPIN} override it: check /etc/ssh/sshd_config and sshd_config.d/0*" >&2; '
            "exit 1; }",
            "systemctl try-reload-or-restart ssh.service",
        ],
        _if=dropin.did_change,
        _shell_executable="bash",
    )


def firewall(settings: BaseSettings) -> None:
    if not settings.base_firewall_enabled:
        checked.service(
            name="Firewall: disabled (base_firewall_enabled = false)",
            service=FIREWALL_UNIT,
            running=False,
            enabled=False,
        )
        return
    files.directory(
        name="Firewall: rules directory",
        path=FIREWALL_RULES_DIR,
        user="root",
        group="root",
        mode="0750",
    )
    ruleset = put_template(
        name="Firewall: default-deny inbound table",
        path="base/firewall.nft.j2",
        dest=FIREWALL_CONFIG,
        mode="0640",
        rules_dir=FIREWALL_RULES_DIR,
    )
    ssh = firewall_rules(
        role="base",
        purpose="SSH",
        name="00-ssh",
        ports=sorted(
            {settings.base_ssh_port, host.data.get("ssh_port", 22), *host.get_fact(SshdListenPorts)}
        ),
        sources=settings.base_ssh_allow_from,
    )
    extra = (
        firewall_rules(
            role="base",
            purpose="operator ports (base_firewall_allow_tcp)",
            name="10-operator",
            ports=settings.base_firewall_allow_tcp,
        )
        if settings.base_firewall_allow_tcp
        else files.file(
            name="Firewall: no operator ports",
            path=f"{FIREWALL_RULES_DIR}/10-operator.nft",
            present=False,
        )
    )
    unit = put_template(
        name=f"Firewall: {FIREWALL_UNIT}",
        path="base/llmhost-firewall.service.j2",
        dest=f"/etc/systemd/system/{FIREWALL_UNIT}",
        mode="0644",
        config=FIREWALL_CONFIG,
    )
    systemd.daemon_reload(name="systemd: load changed units", _if=unit.did_change)
    reload_firewall(ruleset, ssh, extra)


def service(settings: BaseSettings, time_config: TimeConfig) -> None:
    systemd.daemon_reload(name="systemd: load chrony's drop-in", _if=time_config.dropin.did_change)

    def time_config_changed() -> bool:
        return bool(time_config.config.did_change() or time_config.dropin.did_change())

    # Decided when it runs, not from facts read before the install: apt starts chrony
    # with the distribution's servers, and it must move to ours in this same run. One
    # (re)start only: a start followed at once by a restart raced in containers, where
    # the first chronyd could still hold its socket when the second one started.
    server.shell(
        name="chrony: follow the configured servers",
        commands=["systemctl restart chrony.service"],
        _if=time_config_changed,
    )
    checked.service(
        name="chrony: running and enabled",
        service="chrony.service",
        running=True,
        enabled=True,
    )
    if settings.base_firewall_enabled:
        checked.service(
            name="Firewall: active and enabled at boot",
            service=FIREWALL_UNIT,
            running=True,
            enabled=True,
        )
