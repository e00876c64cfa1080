"""Every TCP port llmhost gives a service on a host, and the one check over all of them.

Each role owns its port setting, but two services on one host cannot share a
port, and only a view of all of them can tell. Which ports a host uses follows
from its groups and data, exactly as ``deploy/site.py`` decides which roles run.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from llmhost.errors import ConfigError
from llmhost.onhost.layout import COLOURS
from llmhost.settings import from_data
from roles._common.checks import check_port


def ports_in_use(host: str, data: Any, groups: Collection[str]) -> dict[str, int]:
    """key -> port, for every service the host runs (``data``: a mapping or HostData)."""
    # Imported here: each role's package imports this module while it initialises.
    from roles.base.defaults import BaseSettings
    from roles.edge.defaults import EdgeSettings
    from roles.gateway.defaults import GatewaySettings
    from roles.monitoring import runs_gpu_exporter
    from roles.monitoring.defaults import MonitoringSettings
    from roles.registry.defaults import RegistrySettings
    from roles.runtime.defaults import RuntimeSettings

    monitoring = from_data(MonitoringSettings, data, host)
    ports = {
        "base_ssh_port": from_data(BaseSettings, data, host).base_ssh_port,
        "monitoring_node_exporter_port": monitoring.monitoring_node_exporter_port,
    }
    if runs_gpu_exporter(data, host):
        ports["monitoring_gpu_exporter_port"] = monitoring.monitoring_gpu_exporter_port
    if "monitoring" in groups:
        ports["monitoring_prometheus_port"] = monitoring.monitoring_prometheus_port
        ports["monitoring_alertmanager_port"] = monitoring.monitoring_alertmanager_port
        if monitoring.monitoring_grafana:
            ports["monitoring_grafana_port"] = monitoring.monitoring_grafana_port
    if "registry" in groups:
        registry = from_data(RegistrySettings, data, host)
        ports["registry_port"] = registry.registry_port
        ports["registry_metrics_port"] = registry.registry_metrics_port
    if "edge" in groups:
        edge = from_data(EdgeSettings, data, host)
        ports["edge_port"] = edge.edge_port
        ports["edge_metrics_port"] = edge.edge_metrics_port
    if data.get("model_name"):
        ports["gateway_port"] = from_data(GatewaySettings, data, host).gateway_port
        colours = from_data(RuntimeSettings, data, host).runtime_ports
        if sorted(colours) != sorted(COLOURS):
            raise ConfigError(
                f"names {sorted(colours)}",
                key="runtime_ports",
                fix='give exactly {"blue": PORT, "green": PORT}',
                host=host,
            )
        ports |= {f"runtime_ports.{colour}": colours[colour] for colour in COLOURS}
        ports["monitoring_audit_exporter_port"] = monitoring.monitoring_audit_exporter_port
    return ports


def check_host_ports(
    host: str, data: Any, groups: Collection[str], mine: Collection[str] = ()
) -> dict[str, int]:
    """Every port valid, and no two services on one port; returns them by key.

    A clash is reported on the calling role's own key (``mine``) when it is one
    of the two, since that is the role whose setting the operator is reading.
    """
    ports = ports_in_use(host, data, groups)
    holder: dict[int, str] = {}
    for key, port in ports.items():
        check_port(host, key, port)
        if port in holder:
            reported, other = (holder[port], key) if holder[port] in mine else (key, holder[port])
            raise ConfigError(
                f"{port} is also `{other}`'s port on this host",
                key=reported,
                fix="give each service its own port: they all listen at once "
                "(both colours during a cutover)",
                host=host,
            )
        holder[port] = key
    return ports
