"""Load a pyinfra inventory on the control machine, without connecting to any host.

pyinfra happily runs an inventory that resolves to no hosts (a typo'd path, a
``--limit`` that matches nothing) and exits 0 having done nothing. llmhost's
entry points load the inventory here first and refuse that, and validate every
host's data, so bad input fails before any host is contacted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import REPO_ROOT


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: tuple[str, ...]
    data: Any  # pyinfra HostData: `.get(key, default)`, with group and global data merged
    host_data: dict[str, Any]  # what the inventory sets on this host itself


def load_hosts(inventory: str, limit: tuple[str, ...] = ()) -> list[InventoryHost]:
    """The hosts ``inventory`` resolves to (after ``limit``); never an empty list."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    if not Path(inventory).is_file():
        raise ConfigError(
            f"inventory {inventory!r} is not a file",
            key=None,
            fix="pass the path of an inventory, e.g. inventories/example_uk_eu.py",
        )
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    with ctx_state.use(State()):  # pyinfra executes inventory files inside a state
        loaded = make_inventory(inventory, cwd=str(REPO_ROOT))
    hosts = [
        InventoryHost(
            name=host.name,
            groups=tuple(host.groups),
            data=host.data,
            host_data=dict(loaded.get_host_data(host.name)),
        )
        for host in loaded
    ]
    if limit:
        hosts = [h for h in hosts if any(fnmatch(h.name, p) or p in h.groups for p in limit)]
    if not hosts:
        where = f" with --limit {' '.join(limit)}" if limit else ""
        raise ConfigError(
            f"inventory {inventory} resolves to no hosts{where}",
            key=None,
            fix="add hosts to the inventory's groups (or bring the testbed up for "
            "inventories/testbed.py), or correct --limit",
        )
    return hosts
