"""Operations more than one role adds: firewall drop-ins, waiting for a listener, secrets,
an APT repository's key trusted through its pinned fingerprint.

Each function adds pyinfra operations for the current host; files are only
written when their content, owner or mode differ, and services only reload
when a file they read did change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator, Sequence
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Home
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from llmhost.errors import ConfigError
from llmhost.onhost.layout import CONFIG_DIR
from llmhost.render import render
from roles._common import checked
from roles._common.checked import put_template
from roles._common.facts import FINGERPRINT, KeyringFingerprints, PackageStatus

# The base role's firewall unit loads every drop-in in this directory.
FIREWALL_RULES_DIR = f"{CONFIG_DIR}/firewall.d"
FIREWALL_UNIT = "llmhost-firewall.service"


def split_sources(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """Source networks by family, normalised, so nft gets one rule per family."""
    ipv4: list[str] = []
    ipv6: list[str] = []
    for source in sources:
        network = ipaddress.ip_network(source, strict=False)
        (ipv4 if network.version == 4 else ipv6).append(str(network))
    return ipv4, ipv6


def firewall_rules(
    role: str, purpose: str, name: str, ports: Sequence[int], sources: Sequence[str] = ()
) -> OperationMeta:
    """Write an allow-rule file for ``ports`` (from ``sources``, or anywhere when empty).

    Returns the file operation; pass it to ``reload_firewall`` once a role has
    written all of its rule files.
    """
    ipv4, ipv6 = split_sources(sources)
    return put_template(
        name=f"Firewall: allow TCP {', '.join(map(str, ports))} ({purpose})",
        path="base/firewall-allow.nft.j2",
        dest=f"{FIREWALL_RULES_DIR}/{name}.nft",
        mode="0640",
        role=role,
        purpose=purpose,
        ports=sorted(set(ports)),
        ipv4_sources=ipv4,
        ipv6_sources=ipv6,
    )


def firewall_only_from(
    role: str, purpose: str, name: str, ports: Sequence[int], sources: Sequence[str], closed: str
) -> OperationMeta:
    """Allow ``ports`` from ``sources`` alone; with no source, from nobody: the rule file is
    removed (``closed`` says why, as the operation's name). Unlike ``firewall_rules``, where
    no source means anywhere."""
    if sources:
        return firewall_rules(role, purpose, name, ports, sources)
    path = f"{FIREWALL_RULES_DIR}/{name}.nft"
    return files.file(name=f"Firewall: {closed}", path=path, present=False)


def reload_firewall(*changed: OperationMeta) -> None:
    """Reload the llmhost table when any of ``changed`` wrote something.

    ``try-reload-or-restart`` is a no-op while the firewall is disabled, and the
    unit checks the rule set (``nft --check``) before it replaces the live table.
    A reload that systemd could not start (``status=219/CGROUP``: the unit's cgroup,
    gone since its last run, not yet made again, seen in containers) is tried once more
    a second later; loading the same rules twice is harmless. A rule set that fails its
    check fails both tries, and the unit's log says why.
    """
    reload = f"systemctl try-reload-or-restart {FIREWALL_UNIT}"
    server.shell(
        name="Firewall: apply changed rules",
        commands=[
            f"{reload} || {{ sleep 1; {reload}; }} "
            f"|| {{ journalctl -u {FIREWALL_UNIT} -n 20 --no-pager >&2; exit 1; }}"
        ],
        _if=any_changed(*changed),
    )


def wait_for_port(port: int, unit: str, timeout: int = 30) -> str:
    """A command that waits for a TCP listener on ``port``, else prints ``unit``'s log and fails."""
    return (
        f"for _ in $(seq {timeout * 5}); do "
        f"ss -ltnH 'sport = :{port}' | grep -q . && exit 0; "
        f"systemctl is-failed --quiet {unit} && break; sleep 0.2; done; "
        f"echo '{unit} is not listening on port {port}; its last log lines:' >&2; "
        f"journalctl -u {unit} -n 20 --no-pager >&2; exit 1"
    )


def secret_upload_options() -> dict[str, Any]:
    """pyinfra arguments for uploading a file that holds a secret.

    With sudo, pyinfra uploads to a temporary file first, by default in /tmp with
    the SFTP server's umask (world-readable): secrets go through a 0700 directory
    in the SSH user's home instead. ``--diff`` would print the new content, so a
    deploy that uploads secrets refuses it.
    """
    if host.state.config.DIFF:
        raise ConfigError(
            "--diff would print secrets (keys, passwords) into the deploy's output",
            key=None,
            fix="run this deploy without --diff",
            host=host.name,
        )
    escalates = host.state.config.SUDO or host.data.get("_sudo") or host.data.get("_su_user")
    if not escalates:
        return {}
    home = host.get_fact(Home, _sudo=False, _su_user=None)
    directory = f"{home}/.llmhost-upload"
    files.directory(
        name="Private upload directory for secrets (sudo deploys)",
        path=directory,
        mode="0700",
        _sudo=False,
        _su_user=None,
    )
    return {"_temp_dir": directory}


APT_KEYRINGS_DIR = "/etc/apt/keyrings"  # where third-party repository keys live (signed-by)


def apt_key_tools(owner: str) -> None:
    """What ``apt_key_trusted`` needs on the host: gpg, and the keyrings directory."""
    checked.packages(
        name=f"gpg (checks {owner}'s repository key)",
        packages=["gpg"],
        update="gpg" not in host.get_fact(PackageStatus, packages=["gpg"]),
        no_recommends=True,
    )
    files.directory(name=f"{APT_KEYRINGS_DIR}: APT keyrings", path=APT_KEYRINGS_DIR, mode="0755")


@operation()
def apt_key_trusted(
    url: str, fingerprint: str, keyring: str, owner: str, unreachable: str, rotated: str
) -> Generator[Any, None, None]:
    """``keyring`` holds exactly the key ``fingerprint``, exported from the key file at ``url``.

    The file is downloaded with APT's own fetcher (its proxy settings, its sandbox user) to
    a temporary directory, and its keys are listed with ``gpg --show-keys``; the pinned key
    is imported into a throwaway GnuPG home and exported alone, and only then renamed into
    place. A file without that key, or with it revoked or expired, fails the run with
    nothing trusted; a file that carries other keys beside it (a bundle with retired keys)
    gives the pinned one alone. A fingerprint, not a checksum: the published file grows
    whenever its owner adds a key, and what APT must trust is one key, not one file.

    The errors are worded by the role: ``owner`` is whose key it is ("Grafana"),
    ``unreachable`` what to do when the file cannot be downloaded, ``rotated`` what to do
    when it lacks the pinned key or has it revoked or expired (a mirror or proxy serving
    another key, or the owner's rotation). Each says that nothing was trusted.
    """
    if host.get_fact(KeyringFingerprints, path=keyring) == [fingerprint]:
        host.noop(f"{keyring} holds {owner}'s key {fingerprint} alone")
        return
    yield StringCommand(apt_key_script(url, fingerprint, keyring, owner, unreachable, rotated))


def apt_key_script(
    url: str, fingerprint: str, keyring: str, owner: str, unreachable: str, rotated: str
) -> str:
    """The shell script ``apt_key_trusted`` runs (tests run it against keys of their own)."""
    if not FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"{fingerprint!r} is not a 40-digit upper-case OpenPGP fingerprint")
    return render(
        "_common/apt-key.sh.j2",
        fingerprint=fingerprint,
        **{
            name: quote(value)
            for name, value in {
                "keyring": keyring,
                "url": url,
                "owner": owner,
                "unreachable": unreachable,
                "rotated": rotated,
            }.items()
        },
    )
