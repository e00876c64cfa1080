"""`llmhost testbed`: real Debian test hosts on this machine, for the e2e tests and the demo.

A `TestbedError` from any of these commands is reported as `error: ...` (exit 2)
by the top-level group, like every other input error.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from llmhost.testing.testbed import Testbed


@click.group()
def testbed() -> None:
    """Real Debian 12 test hosts on this machine (root; systemd-nspawn + network namespaces).

    \b
    Hosts are tb1..tbN at 10.231.N.2, reached over SSH with a key the testbed
    generates; each has an egress proxy, an NTP server and a Debian archive
    mirror (for hosts without egress) at 10.231.N.1.
    State lives in $LLMHOST_TESTBED_DIR (default /var/lib/llmhost-testbed).
    """


def _testbed() -> Testbed:
    """The testbed, imported only by the commands that use it (it is no part of a deploy)."""
    from llmhost.testing.testbed import Testbed

    return Testbed()


@testbed.command("up")
@click.option("--hosts", "count", default=2, show_default=True, help="How many hosts.")
def testbed_up(count: int) -> None:
    """Boot COUNT hosts (reusing healthy ones, replacing stale ones)."""
    hosts = _testbed().up(count)
    for host in hosts:
        click.echo(f"{host.name}\t{host.address}")


@testbed.command("down")
@click.option("--purge-image", is_flag=True, help="Also delete the cached host image.")
def testbed_down(purge_image: bool) -> None:
    """Stop every host; remove its processes, namespace, veth, mounts and files."""
    _testbed().down(purge_image=purge_image)
    click.echo("testbed is down")


@testbed.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_status(as_json: bool) -> None:
    """List hosts with their address, health and systemd state."""
    rows = _testbed().status()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no testbed hosts; `llmhost testbed up` boots some")
    for row in rows:
        health = "healthy" if row["healthy"] else "STALE (next `up` replaces it)"
        click.echo(f"{row['name']}\t{row['address']}\t{health}\t{row['system']}")


@testbed.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def testbed_ssh(host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST (tb1, or its address), or run COMMAND there."""
    testbed = _testbed()
    argv = testbed.ssh_argv(testbed.find(host))
    if command:
        argv.append(" ".join(command))  # as ssh does: the remote shell splits it
    os.execvp(argv[0], argv)


@testbed.command("recreate")
@click.argument("host")
def testbed_recreate(host: str) -> None:
    """Destroy HOST and boot it again blank at the same address (a reinstalled machine).

    \b
    Then rebuild it as a dead host is rebuilt:
      llmhost rebuild inventories/testbed.py HOST
    """
    recreated = _testbed().recreate(host)
    click.echo(f"{recreated.name}\t{recreated.address}\tblank")


@testbed.command("egress")
@click.argument("host")
@click.argument("state", type=click.Choice(["open", "closed"]))
def testbed_egress(host: str, state: str) -> None:
    """Open or close HOST's way out (its proxy to the package registries).

    Closed, only the other hosts and its Debian archive mirror (a stand-in for an
    internal one, at 10.231.N.1:8889) are reachable from it.
    """
    testbed = _testbed()
    testbed.set_egress(testbed.find(host), open_=state == "open")
    click.echo(f"{host}: egress {state}")
