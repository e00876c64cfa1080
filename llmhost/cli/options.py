"""Options that more than one command group takes: where the registries and secrets are.

`models`, `runtimes` and `keys` all reach the registries or the secrets directory,
so they name them with the same options and resolve them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llmhost.errors import ConfigError
from llmhost.mirror import RegistryAccess
from llmhost.secrets import secrets_directory

registry_option = click.option(
    "--registry",
    help="Registry as host:port (default: the inventory's first registry, "
    "else the one recorded in the model file).",
)
inventory_option = click.option(
    "--inventory", type=click.Path(dir_okay=False), help="Take registries and secrets from it."
)
secrets_option = click.option(
    "--secrets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory with ca/ and registry.json (default: the inventory's, else "
    "inventories/secrets).",
)


def registry_access(
    registry: str | None, inventory: str | None, secrets_dir: Path | None, recorded: str | None
) -> list[RegistryAccess]:
    """The registries to talk to, in order (primary first).

    --registry wins over the inventory's `registry` group, which wins over the
    registry ``recorded`` in a model file, so one flag redirects a single run.
    """
    endpoints: list[str] = []
    data: Any = {}
    if inventory:
        from llmhost.inventory import load_hosts
        from roles.registry.defaults import endpoint

        hosts = load_hosts(inventory, ("registry",))
        endpoints = [endpoint(h.name, h.data) for h in hosts]
        data = hosts[0].data
    if registry:
        endpoints = [registry]
    if not endpoints and recorded:
        endpoints = [recorded]
    if not endpoints:
        raise ConfigError(
            "no registry given", key=None, fix="pass --registry HOST:PORT or --inventory INVENTORY"
        )
    directory = secrets_dir or secrets_directory(data)
    return [RegistryAccess.from_secrets(e, directory) for e in endpoints]
