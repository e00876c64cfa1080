"""Facts the runtime role decides on: what each colour runs, and what is installed."""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase


class RuntimeState(FactBase[dict[str, Any]]):
    """``/var/lib/llmhost/state.json``: the active colour and the release each colour runs.

    A file that is not a JSON object comes back as ``{"unreadable": <reason>}``
    so the role can refuse with the fix instead of guessing.
    """

    def command(self, path: str) -> str:
        return f"cat {path} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"active": None, "colours": {}, "history": []}

    def process(self, output: list[str]) -> dict[str, Any]:
        text = "\n".join(output).strip()
        if not text:
            return self.default()
        try:
            state = json.loads(text)
        except ValueError as error:
            return {"unreadable": f"not JSON ({error})"}
        if not isinstance(state, dict):
            return {"unreadable": "not a JSON object"}
        return {**self.default(), **state}


class UnitActive(FactBase[bool]):
    """Whether a systemd unit is active right now."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active {unit} 2>/dev/null || true"

    def process(self, output: list[str]) -> bool:
        return "".join(output).strip() == "active"


class InstalledMarker(FactBase[str | None]):
    """The content of an install marker file (written last, so present means complete)."""

    def command(self, path: str) -> str:
        return f"cat {path} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return "".join(output).strip() or None
