"""Who may scrape a host's metrics: the exporters' firewall and the gateway's engine metrics."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pyinfra import inventory

from llmhost.errors import ConfigError
from llmhost.settings import from_data
from roles._common.checks import join_host_port

LOCAL_HOST = "@local"  # pyinfra's name for the machine the deploy runs on
LOCAL_ADDRESS = "127.0.0.1"


def address_of(name: str, data: Any) -> str:
    """Where the control machine (and so the other hosts) reach host ``name``: its
    ``ssh_hostname``, else its name; the box a deploy runs on (``@local``) at loopback."""
    found = data.get("ssh_hostname") or (LOCAL_ADDRESS if name == LOCAL_HOST else name)
    return str(found)


def address_networks(members: Iterable[Any]) -> list[str]:
    """Each host's address as a one-address network (CIDR), where it is an IP address.

    A host reached by a DNS name is left out: firewalls and sandboxes admit addresses,
    and would trust a name only by resolving it.
    """
    found = []
    for member in members:
        try:
            found.append(str(ipaddress.ip_network(address_of(member.name, member.data))))
        except ValueError:
            continue
    return found


def scrape_sources(host: str, data: Any) -> list[str]:
    """Networks allowed to scrape: `monitoring_scrape_from`, else each monitoring host's address.

    Empty when the inventory has no monitoring host: then nothing from outside may. A
    monitoring host scraping itself needs no rule (its own traffic arrives on loopback).
    """
    from roles.monitoring.defaults import MonitoringSettings  # its package imports this one

    configured = from_data(MonitoringSettings, data, host).monitoring_scrape_from
    if configured:
        return list(configured)
    found = []
    for member in inventory.get_group("monitoring", []):
        if member.name == host:
            continue
        address = address_of(member.name, member.data)
        try:
            found.append(str(ipaddress.ip_network(address)))
        except ValueError:
            raise ConfigError(
                f"monitoring host {member.name} is reached at {address!r}, not an IP address, "
                "so the firewall cannot admit it by address",
                key="monitoring_scrape_from",
                fix="list the monitoring hosts' networks (CIDR) in monitoring_scrape_from",
                host=host,
            ) from None
    return found


def watchers() -> list[str]:
    """The Prometheus URL of each monitoring host: they must watch a host before its cutover."""
    from roles.monitoring.defaults import MonitoringSettings

    urls = []
    for member in inventory.get_group("monitoring", []):
        address = address_of(member.name, member.data)
        port = from_data(MonitoringSettings, member.data, member.name).monitoring_prometheus_port
        urls.append(f"http://{join_host_port(address, port)}")
    return urls


def cutover_wait_s(host: str, data: Any) -> int:
    from roles.monitoring.defaults import MonitoringSettings

    return from_data(MonitoringSettings, data, host).monitoring_cutover_wait_s
