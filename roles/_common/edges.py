"""Which edges send requests to which serving hosts: the one view both sides need.

The edge role writes its pool from it; a serving host's cutover finds the edges it must
leave (and rejoin) before it switches, and its gateway the edges whose word on a
request's team and feature it takes.
"""

from __future__ import annotations

from typing import Any

from pyinfra import inventory


def fronted(settings: Any) -> list[Any]:
    """The serving hosts (pyinfra Hosts, by name) an edge with ``settings`` sends to."""
    group = settings.edge_serving_group
    candidates = list(inventory) if group is None else list(inventory.get_group(group, []))
    found = [member for member in candidates if member.data.get("model_name")]
    return sorted(found, key=lambda member: member.name)


def edges_in_front_of(name: str) -> list[Any]:
    """The EdgeSettings of each edge of the inventory that sends requests to host ``name``."""
    return [settings for _, settings in _edges_of(name)]


def edge_sources(name: str) -> list[str]:
    """The networks (one address each) of the edges in front of host ``name``.

    An edge reached by a DNS name is left out: the gateway admits addresses, and would
    trust a name only by resolving it.
    """
    from roles._common.scrapers import address_networks

    return sorted(set(address_networks(member for member, _ in _edges_of(name))))


def _edges_of(name: str) -> list[tuple[Any, Any]]:
    from llmhost.settings import from_data
    from roles.edge.defaults import EdgeSettings  # its package imports this module

    found = []
    for member in inventory.get_group("edge", []):
        settings = from_data(EdgeSettings, member.data, member.name)
        if any(serving.name == name for serving in fronted(settings)):
            found.append((member, settings))
    return found
