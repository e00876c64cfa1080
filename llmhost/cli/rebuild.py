"""`llmhost fingerprint`, `lock-packages`, `rebuild`: a dead host rebuilt, equal to its twin.

The logic is in `llmhost.rebuild`; these commands parse arguments, print progress on
stderr and the verdict as JSON on stdout, and exit 0 equal / 1 different / 2 cannot run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from llmhost import converge
from llmhost.cli.deploy import _checked_hosts
from llmhost.cli.errors import LlmhostError, LlmhostFailure
from llmhost.messages import say, warn
from llmhost.paths import REPO_ROOT


def _fingerprints(inventory: str, names: list[str]) -> dict[str, dict[str, Any]]:
    from llmhost.rebuild import collect

    found = collect(os.path.abspath(inventory), names)
    failed = {name: f["error"] for name, f in found.items() if "error" in f}
    if failed:
        raise LlmhostError("; ".join(failed.values()))
    return found


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("hosts", nargs=-1, required=True)
@click.option(
    "--against", "twin", help="Compare each of HOSTS with this host; exit 1 on a difference."
)
def fingerprint(inventory: str, hosts: tuple[str, ...], twin: str | None) -> None:
    """Print the state fingerprint of HOSTS as JSON (or their differences from a twin).

    \b
    A fingerprint is what a host runs, independent of which host it is: the version of
    every installed package; the SHA256, mode and owner of every file under the roots
    llmhost manages (/etc/llmhost, nginx, systemd units, Prometheus, APT sources and
    keys, sshd and chrony drop-ins, the host-side tools); the active release (model
    digest, engine and arguments) and its engine binary's digest. The host's own name
    and address, and `rebuild_host_values`, are replaced by {host}, {address}, {name};
    its private keys and its own certificate are listed, not hashed.
    Two hosts converged from the same repository, registry and archive print the same.
    """
    names = [*hosts, *([twin] if twin else [])]
    found = _fingerprints(inventory, names)
    if not twin:
        click.echo(json.dumps(found, indent=1, sort_keys=True))
        return
    from llmhost.onhost.fingerprint import differences

    verdict = {name: differences(found[name], found[twin]) for name in hosts if name != twin}
    click.echo(json.dumps({"twin": twin, "differences": verdict}, indent=1, sort_keys=True))
    if any(verdict.values()):
        sys.exit(1)


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("host")
@click.option("--twin", required=True, help="A host with the same data that was never destroyed.")
@click.option(
    "--unpinned-packages",
    is_flag=True,
    help="Rebuild without base_package_lock: the newest package versions the APT sources hold.",
)
def rebuild(inventory: str, host: str, twin: str, unpinned_packages: bool) -> None:
    """Rebuild HOST (reinstalled blank) from the repository and the registry; prove it TWIN's.

    \b
    1. check the inventory offline, and that what HOST runs is pinned: the model by
       its OCI digest, the engine by its build digest or hashed lock, the Debian
       packages by `base_package_lock` (printed);
    2. list what the rebuild still needs from outside the inventory's hosts and
       mirrors (the egress proxy, PyPI, a vendor repository without a mirror): with
       none listed, the host rebuilds with its egress closed;
    3. converge HOST with deploy/site.py (the gate runs as in any deploy), then again,
       requiring zero changes;
    4. compare HOST's fingerprint with TWIN's (`llmhost fingerprint`).
    stdout gets the verdict as JSON. Exit 0 equal, 1 a step failed or the two differ,
    2 the inventory cannot be used.
    """
    from llmhost.inventory import load_inventory
    from llmhost.rebuild import host_pins, needs_outside
    from roles._common.site import audit_site

    if host == twin:
        raise LlmhostError("--twin must be another host: a host is trivially its own twin")
    _checked_hosts(inventory, (host, twin))
    loaded = load_inventory(inventory, (host,))
    pinned = host_pins(loaded, host, unpinned_packages=unpinned_packages)
    for what, pin in pinned.items():
        say(f"{host}: {what}: {pin}")
    data = loaded.inventory.get_host(host).data
    outside = needs_outside(audit_site(loaded.inventory, loaded.state, [host]).endpoints, data)
    for line in outside:
        warn(f"{host} needs from outside: {line}")
    if not outside:
        say(f"{host} needs nothing from outside the inventory's hosts and mirrors")
    verdict: dict[str, Any] = {"host": host, "twin": twin, "pins": pinned, "needs_outside": outside}
    site = str(REPO_ROOT / converge.SITE)
    path = os.path.abspath(inventory)
    say(f"{host}: converging")
    first = converge.run(path, site, limit=(host,), stream_stderr=True)
    if first.returncode != 0 or first.errors:
        raise LlmhostFailure(
            f"{host}: the rebuild's converge failed (exit {first.returncode}); see above"
        )
    say(f"{host}: converged ({first.changes} changes); converging again")
    second = converge.run(path, site, limit=(host,))
    if second.returncode != 0 or second.errors:
        raise LlmhostFailure(
            f"{host}: the second converge failed (exit {second.returncode}): "
            f"{second.stderr[-2000:]}"
        )
    verdict["changes"] = {"first": first.changes, "second": second.changes}
    if second.changes:
        verdict["second_run_changed"] = second.changed_operations()
    from llmhost.onhost.fingerprint import differences

    found = _fingerprints(inventory, [host, twin])
    verdict["differences"] = differences(found[host], found[twin])
    verdict["equal"] = not verdict["differences"]
    click.echo(json.dumps(verdict, indent=1, sort_keys=True))
    if verdict.get("second_run_changed"):
        raise LlmhostFailure(
            f"{host}: the second converge changed {second.changes} operation(s): "
            + "; ".join(verdict["second_run_changed"])
        )
    if not verdict["equal"]:
        raise LlmhostFailure(
            f"{host} differs from {twin} in {len(verdict['differences'])} way(s): "
            + "; ".join(verdict["differences"][:10])
        )
    say(f"{host} is rebuilt: its fingerprint equals {twin}'s")


@click.command("lock-packages")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("host")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The lock file to write, e.g. inventories/locks/packages-prod.json.",
)
def lock_packages(inventory: str, host: str, out: str) -> None:
    """Write HOST's installed Debian packages, each at its version, to a package lock.

    \b
    Take it from a converged host that serves well (the twin of a later rebuild), then
    set `base_package_lock` to the file for the hosts that must run the same versions
    and converge them: the base role pins every package in it (APT preferences,
    priority 1000) before it installs anything, so a host rebuilt blank installs these
    versions, dependencies included. Commit the lock; take it again after upgrading
    the twin. The APT sources must keep the versions (a snapshot mirror does).
    """
    from llmhost.packagelock import LOCK_KEY, lock_document

    _checked_hosts(inventory, (host,))
    found = _fingerprints(inventory, [host])
    document = lock_document(host, found[host]["packages"])
    with open(out, "w") as lock:
        lock.write(json.dumps(document, indent=1, sort_keys=True) + "\n")
    written = Path(out).resolve()
    # The setting reads a relative path from the repository root.
    value = written.relative_to(REPO_ROOT) if written.is_relative_to(REPO_ROOT) else written
    say(f"{host}: {len(document['packages'])} packages locked in {written}")
    say(f"set {LOCK_KEY} = {str(value)!r} for the hosts that must run them, and converge")
