"""Public settings of the registry role (hosts in the `registry` group)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmhost.settings import from_data, setting
from roles._common.checks import join_host_port
from roles._common.scrapers import address_of

REGISTRY_USER = "docker-registry"
# Not under /etc/llmhost (root:llmhost 0750), which the registry user cannot enter.
CONFIG_DIR = "/etc/llmhost-registry"
VENDOR_UNIT = "docker-registry.service"
GC_UNIT = "llmhost-registry-gc"


@dataclass(frozen=True)
class RegistrySettings:
    registry_port: int = setting(5000, "TCP port of the registry (HTTPS)")
    registry_storage_path: str = setting(
        "/var/lib/docker-registry", "Where blobs and manifests are stored on the registry host"
    )
    registry_address: str | None = setting(
        None,
        "Name or address clients use for this registry (and its certificate); "
        "unset means the host's `ssh_hostname`, else its inventory name (`@local`: 127.0.0.1)",
    )
    registry_metrics_port: int = setting(
        5001,
        "Port of the registry's own metrics (`/metrics`, plain HTTP, on its debug server); "
        "open to the monitoring hosts alone",
    )
    registry_allow_from: list[str] = setting(
        [], "Source networks (CIDR) allowed to reach the registry; empty means from anywhere"
    )
    registry_gc_schedule: str | None = setting(
        None,
        "systemd OnCalendar of garbage collection, which pauses the registry; unset: Sunday "
        "03:30 on the primary, two hours later on each further registry host",
    )


def endpoint(name: str, data: Any) -> str:
    """``address:port`` at which clients reach the registry on host ``name``.

    ``data`` is that host's data (a mapping or pyinfra HostData).
    """
    settings = from_data(RegistrySettings, data, name)
    address = settings.registry_address or address_of(name, data)
    return join_host_port(address, settings.registry_port)
