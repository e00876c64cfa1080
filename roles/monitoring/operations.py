"""The monitoring role's operations: rules Prometheus would refuse never replace good ones;
an APT repository is trusted through one pinned key, never a whole published key file."""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from io import StringIO
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files

from llmhost.render import render
from roles.monitoring.facts import FINGERPRINT, KeyringFingerprints


@operation()
def rules_installed(content: str, dest: str) -> Generator[Any, None, None]:
    """``dest`` holds ``content``: uploaded beside it, checked with `promtool check rules`,
    then renamed over it; a file promtool refuses is removed and the run fails.

    Prometheus keeps its old rules when a reload finds a bad file, silently: checking
    first is what makes a broken rule a failed deploy instead of missing alerts.
    """
    wanted = hashlib.sha256(content.encode()).hexdigest()
    if host.get_fact(Sha256File, path=dest) == wanted:
        host.noop(f"{dest} holds these rules")
        return
    staged = f"{dest}.new"
    yield from files.put._inner(
        src=StringIO(content), dest=staged, mode="0644", create_remote_dir=False
    )
    yield StringCommand(
        f"promtool check rules {quote(staged)} >&2 && mv -f {quote(staged)} {quote(dest)} "
        f"|| {{ rm -f {quote(staged)}; exit 1; }}"
    )


@operation()
def apt_key_trusted(
    url: str, fingerprint: str, keyring: str, owner: str, unreachable: str, rotated: str
) -> Generator[Any, None, None]:
    """``keyring`` holds exactly the key ``fingerprint``, exported from the key file at ``url``.

    The file is downloaded with APT's own fetcher (its proxy settings, its sandbox user) to
    a temporary directory, and its keys are listed with ``gpg --show-keys``; the pinned key
    is imported into a throwaway GnuPG home and exported alone, and only then renamed into
    place. A file without that key, or with it revoked or expired, fails the run with
    nothing trusted. A fingerprint, not a checksum: the published file grows whenever its
    owner adds a key, and what APT must trust is one key, not one file.
    ``owner``, ``unreachable`` and ``rotated`` word the errors (whose key, what to do).
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
        "monitoring/apt-key.sh.j2",
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
