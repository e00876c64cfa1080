"""Preflight checks of the base role: they assert and never change anything.

The data checks run before any fact is gathered, so a bad inventory fails
before any host is contacted for more than its connection; the platform checks
read one fact. Every failure names the host, the key (where there is one) and
the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmhost.endpoints import DECLARATIONS_KEY
from llmhost.errors import ConfigError
from llmhost.hardware import HardwareClass, check_hardware, load_classes
from llmhost.packagelock import read_lock
from llmhost.reference import is_decisive, unknown_setting
from llmhost.residency import ResidencySettings, check_region
from llmhost.settings import from_data
from roles._common.checks import (
    check_hostname,
    check_networks,
    check_port,
    check_url,
)
from roles._common.ports import check_host_ports
from roles.base.defaults import SUPPORTED_OS, BaseSettings
from roles.base.facts import PlatformDict


@dataclass(frozen=True)
class HostIdentity:
    """What the inventory says a host is, once validated."""

    region: str
    hardware: HardwareClass
    settings: BaseSettings


@dataclass(frozen=True)
class DataSources:
    """Where a host's data comes from, each part as the inventory wrote it.

    pyinfra merges them into one mapping; the rules below need to know which part
    set a key (a policy may only be set for everyone, two groups may not disagree).
    """

    host: Mapping[str, Any]  # set on the host itself
    groups: Mapping[str, Mapping[str, Any]]  # each of its groups' own data
    everyone: Mapping[str, Any] = field(default_factory=dict)  # group_data/all.py, `all`
    override: Mapping[str, Any] = field(default_factory=dict)  # --data on the command line

    def places(self, *, everyone: bool = True) -> list[tuple[str, Mapping[str, Any]]]:
        """(where, data) for every part (but the one for everyone, if asked), as a person
        would name it."""
        return [
            ("on the host itself", self.host),
            *((f"in group `{group}`", data) for group, data in sorted(self.groups.items())),
            *([("for everyone (group_data/all.py)", self.everyone)] if everyone else []),
            ("on the command line (--data)", self.override),
        ]


def check_inventory(
    host: str, data: Any, sources: DataSources, groups: Collection[str] = ()
) -> HostIdentity:
    """Validate a host's inventory data; ``data`` is the merged mapping or pyinfra HostData.

    ``groups`` decide which services, and so which ports, the host has.
    """
    check_known_keys(host, sources)
    check_policy_set_for_everyone(host, sources)
    check_groups_agree(host, sources)
    residency = from_data(ResidencySettings, data, host)
    region = check_region(data.get("region"), residency.residency_allowed_regions, host)
    hardware = check_hardware(data.get("hardware"), load_classes(), host)
    settings = from_data(BaseSettings, data, host)
    check_networks(host, "base_ssh_allow_from", settings.base_ssh_allow_from)
    check_endpoints(host, settings)
    check_host_ports(host, data, groups)
    for port in settings.base_firewall_allow_tcp:
        check_port(host, "base_firewall_allow_tcp", port)
    if settings.base_apt_mirror and not settings.base_apt_security_mirror:
        raise ConfigError(
            "is unset while `base_apt_mirror` is set, so the host would get no security updates",
            key="base_apt_security_mirror",
            fix="set it to your mirror of the distribution's security archive",
            host=host,
        )
    if settings.base_package_lock:
        read_lock(settings.base_package_lock, host)
    if data.get("ssh_password") and not data.get("ssh_key"):
        raise ConfigError(
            "the deploy logs in with a password, and the base role turns password "
            "authentication off, which would lock this deploy out",
            key="ssh_password",
            fix="install an SSH key for the deploy user on the host and set `ssh_key` "
            "(and drop `ssh_password`) in the inventory",
            host=host,
        )
    return HostIdentity(region=region, hardware=hardware, settings=settings)


def check_platform(host: str, platform: PlatformDict, settings: BaseSettings) -> None:
    """Fail on a host llmhost cannot manage safely: init, OS, sshd layout, lockout."""
    if platform["pid1"] != "systemd":
        raise ConfigError(
            f"PID 1 is {platform['pid1'] or 'unknown'!r}, not systemd",
            key=None,
            fix="llmhost manages services as systemd units; use a host booted with systemd",
            host=host,
        )
    os_name = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(platform["os_id"], platform["os_id"])
    if platform["os_version"] not in SUPPORTED_OS.get(os_name, ()):
        supported = "; ".join(f"{name} {', '.join(v)}" for name, v in SUPPORTED_OS.items())
        raise ConfigError(
            f"OS {os_name or 'unknown'} {platform['os_version']} is not supported",
            key=None,
            fix=f"reinstall the host with a supported OS ({supported})",
            host=host,
        )
    if not platform["sshd_includes_dropins"]:
        raise ConfigError(
            "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/*.conf, so the "
            "hardening drop-in would be ignored",
            key=None,
            fix="add `Include /etc/ssh/sshd_config.d/*.conf` as the first line of "
            "/etc/ssh/sshd_config (the distribution default)",
            host=host,
        )
    check_deploy_not_locked_out(host, platform["ssh_client"], settings)


def check_deploy_not_locked_out(host: str, ssh_client: str, settings: BaseSettings) -> None:
    """The firewall must keep admitting the address this very deploy connects from."""
    if not settings.base_firewall_enabled or not settings.base_ssh_allow_from:
        return
    try:
        client = ipaddress.ip_address(ssh_client)
    except ValueError:
        raise ConfigError(
            f"the address this deploy connects from is unknown ({ssh_client or 'empty'!r} in "
            "SSH_CONNECTION), so a firewall limited to `base_ssh_allow_from` could lock it out",
            key="base_ssh_allow_from",
            fix="connect so that sshd sets SSH_CONNECTION (a plain SSH login), "
            "or leave `base_ssh_allow_from` empty",
            host=host,
        ) from None
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.base_ssh_allow_from]
    if not any(client in network for network in allowed):
        raise ConfigError(
            f"this deploy connects from {client}, which `base_ssh_allow_from` "
            f"({', '.join(settings.base_ssh_allow_from)}) would block",
            key="base_ssh_allow_from",
            fix=f"add the deploy's network (e.g. {client}/32) to `base_ssh_allow_from`",
            host=host,
        )


def check_known_keys(host: str, sources: DataSources) -> None:
    """A key that looks like an llmhost setting and is not one is a typo, never a default."""
    for where, data in sources.places():
        for key in data:
            suggestion = unknown_setting(key)
            if suggestion is not None:
                raise ConfigError(
                    f"is not an llmhost setting (set {where})"
                    + (f"; did you mean `{suggestion}`?" if suggestion else ""),
                    key=key,
                    fix="correct the name (`llmhost config reference` lists every key), or "
                    "remove it",
                    host=host,
                )


def check_policy_set_for_everyone(host: str, sources: DataSources) -> None:
    """The residency policy is the organisation's: one list, for every host, in one place."""
    key = "residency_allowed_regions"
    for where, data in sources.places(everyone=False):
        if key in data:
            raise ConfigError(
                f"is set {where}, which would let part of the inventory widen or dodge the "
                "residency policy",
                key=key,
                fix="set the policy once for everyone in inventories/group_data/all.py, "
                "and remove it from there",
                host=host,
            )


# Keys whose values from several parts of the inventory add up instead of replacing each
# other (llmhost reads every part itself), so two groups may set different ones.
ADDED_UP = frozenset({DECLARATIONS_KEY})


def check_groups_agree(host: str, sources: DataSources) -> None:
    """Two groups of one host that set the same key differently: pyinfra keeps one silently."""
    groups = sorted(sources.groups.items())
    for index, (group, data) in enumerate(groups):
        for other, other_data in groups[index + 1 :]:
            for key in sorted(set(data) & set(other_data)):
                if data[key] != other_data[key] and is_decisive(key) and key not in ADDED_UP:
                    raise ConfigError(
                        f"group `{group}` sets {data[key]!r} and group `{other}` sets "
                        f"{other_data[key]!r}; pyinfra would keep one of them silently",
                        key=key,
                        fix="set it in one of the two groups, or on the host itself",
                        host=host,
                    )


def check_endpoints(host: str, settings: BaseSettings) -> None:
    """The proxy, the mirrors and the time servers: well-formed before anything is written."""
    for key in ("base_http_proxy", "base_apt_mirror", "base_apt_security_mirror"):
        value = getattr(settings, key)
        if value is not None:
            check_url(host, key, value)
    for server in settings.base_ntp_servers:
        check_hostname(host, "base_ntp_servers", server)
    for entry in settings.base_no_proxy:
        if not entry or any(c.isspace() or c == "," for c in entry):
            raise ConfigError(
                f"{entry!r} is not a host, domain, address or network",
                key="base_no_proxy",
                fix="list one entry per item (e.g. 'registry.internal.example', "
                "'.internal.example', '10.0.0.0/8'), without spaces or commas",
                host=host,
            )
