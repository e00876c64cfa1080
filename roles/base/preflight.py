"""Preflight checks of the base role: they assert and never change anything.

The data checks run before any fact is gathered, so a bad inventory fails
before any host is contacted for more than its connection; the platform checks
read one fact. Every failure names the host, the key (where there is one) and
the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from llmhost.errors import ConfigError
from llmhost.hardware import HardwareClass, check_hardware, load_classes
from llmhost.residency import ResidencySettings, check_region
from llmhost.settings import from_data
from roles._common.checks import check_networks, check_port
from roles._common.ports import check_host_ports
from roles.base.defaults import SUPPORTED_OS, BaseSettings
from roles.base.facts import PlatformDict


@dataclass(frozen=True)
class HostIdentity:
    """What the inventory says a host is, once validated."""

    region: str
    hardware: HardwareClass
    settings: BaseSettings


def check_inventory(
    host: str,
    data: Any,
    host_level: Mapping[str, Any] | None = None,
    groups: Collection[str] = (),
) -> HostIdentity:
    """Validate a host's inventory data; ``data`` is a mapping or pyinfra HostData.

    ``host_level`` is the data set on the host itself (not inherited from groups):
    the residency policy may not be widened there, one host at a time. ``groups``
    decide which services, and so which ports, the host has.
    """
    if host_level and "residency_allowed_regions" in host_level:
        raise ConfigError(
            "is set on the host itself, which would let one host widen the residency policy",
            key="residency_allowed_regions",
            fix="set the policy once for everyone in inventories/group_data/all.py "
            "(or a group's file), and remove it from this host's data",
            host=host,
        )
    residency = from_data(ResidencySettings, data, host)
    region = check_region(data.get("region"), residency.residency_allowed_regions, host)
    hardware = check_hardware(data.get("hardware"), load_classes(), host)
    settings = from_data(BaseSettings, data, host)
    check_networks(host, "base_ssh_allow_from", settings.base_ssh_allow_from)
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
