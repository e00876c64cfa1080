"""The monitoring role's operations: rules Prometheus would refuse never replace good ones."""

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
