"""`llmhost keys`: the gateway's API keys, one per identity, kept in the secrets directory."""

from __future__ import annotations

from pathlib import Path

import click

from llmhost.cli.options import inventory_option, secrets_option
from llmhost.messages import say
from llmhost.secrets import secrets_directory


@click.group()
def keys() -> None:
    """API keys of the gateway: one per identity, kept in the secrets directory.

    \b
    llmhost keys add team-a --inventory inventories/production.py   # prints the key once
    llmhost keys list --inventory inventories/production.py
    Then converge: every gateway admits the identities its `gateway_identities` names.
    """


def _secrets_for(inventory: str | None, secrets_dir: Path | None) -> Path:
    """--secrets-dir, else the inventory's secrets directory, else the default one."""
    if secrets_dir:
        return secrets_dir
    if inventory:
        from llmhost.inventory import load_hosts

        return secrets_directory(load_hosts(inventory)[0].data)
    return secrets_directory({})


@keys.command("add")
@click.argument("identity")
@inventory_option
@secrets_option
@click.option("--rotate", is_flag=True, help="Replace the identity's existing key.")
def keys_add(identity: str, inventory: str | None, secrets_dir: Path | None, rotate: bool) -> None:
    """Create a key for IDENTITY (or rotate it) and print it once."""
    from llmhost.secrets import add_api_key

    directory = _secrets_for(inventory, secrets_dir)
    key = add_api_key(directory, identity, rotate)
    click.echo(key)
    done = "rotated" if rotate else "created"
    say(f"{identity}: key {done} in {directory / 'api-keys.json'}; converge to apply")


@keys.command("list")
@inventory_option
@secrets_option
def keys_list(inventory: str | None, secrets_dir: Path | None) -> None:
    """The identities that have a key (never the keys), once every entry is checked.

    A directory that does not exist is refused rather than listed as empty: it
    is a typo more often than a fresh start (`keys add` creates it).
    """
    from llmhost.secrets import api_keys, existing_directory

    directory = existing_directory(_secrets_for(inventory, secrets_dir))
    names = sorted(api_keys(directory))
    for name in names:
        click.echo(name)
    if not names:
        say(f"no API keys in {directory}; llmhost keys add IDENTITY adds one")
