"""Facts the runtime role decides on: whether a colour runs, and what is installed.

What each colour runs is in the host's state file (``roles._common.facts.HostState``).
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class UnitActive(FactBase[bool]):
    """Whether a systemd unit is active right now."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active {shlex.quote(unit)} 2>/dev/null || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "active"


class InstalledMarker(FactBase[str | None]):
    """The content of an install marker file (written last, so present means complete)."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return "".join(output).strip() or None
