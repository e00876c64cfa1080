"""Public settings of the base role: one field per host-data key, documented once."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.settings import setting

SUPPORTED_OS = {"Debian": ("12",), "Ubuntu": ("22.04", "24.04")}


@dataclass(frozen=True)
class BaseSettings:
    base_http_proxy: str | None = setting(
        None,
        "Egress proxy (`http://host:port`) for apt, pip and model tools; unset means direct",
    )
    base_no_proxy: list[str] = setting(
        ["localhost", "127.0.0.1", "::1"],
        "Hosts and domains that bypass `base_http_proxy` (internal registry, mirror)",
    )
    base_apt_mirror: str | None = setting(
        None,
        "Debian/Ubuntu archive mirror URL; when set it becomes the host's only APT source",
    )
    base_apt_security_mirror: str | None = setting(
        None,
        "Security archive mirror URL, used with `base_apt_mirror` (`-security` suite)",
    )
    base_apt_components: list[str] = setting(
        ["main"], "Archive components taken from `base_apt_mirror`"
    )
    base_package_lock: str | None = setting(
        None,
        "Package lock (JSON, from `llmhost lock-packages`; a relative path is from the "
        "repository root): every Debian package, dependencies included, pinned to its version "
        "there (APT preferences, priority 1000), so a rebuild installs its twin's versions. "
        "The APT sources must still hold them (a snapshot mirror). Unset: the sources' newest",
    )
    base_ntp_servers: list[str] = setting(
        ["0.uk.pool.ntp.org", "1.uk.pool.ntp.org", "2.uk.pool.ntp.org"],
        "NTP servers chrony follows (the NTP pool's UK zone by default: its europe zone "
        "spans countries outside the UK and the EU; use internal ones if you have them)",
    )
    base_ssh_port: int = setting(
        22, "Port sshd listens on; llmhost opens it in the firewall but never moves sshd"
    )
    base_ssh_allow_from: list[str] = setting(
        [], "Source networks (CIDR) allowed to reach SSH; empty means from anywhere"
    )
    base_firewall_enabled: bool = setting(
        True, "Default-deny inbound nftables firewall; only SSH and declared ports are open"
    )
    base_firewall_allow_tcp: list[int] = setting(
        [], "Extra inbound TCP ports the operator opens on every host of this scope"
    )
