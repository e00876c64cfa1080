"""Facts more than one role decides on."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

from llmhost.onhost.layout import empty_state


class HostState(FactBase[dict[str, Any]]):
    """The host's state file: the active colour, each colour's release, gate verdicts.

    A file that is not a JSON object comes back as ``{"unreadable": <reason>}``
    so a role can refuse with the fix instead of guessing.
    """

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, Any]:
        return empty_state()

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


class DirectoryEntries(FactBase[list[str]]):
    """The names in a directory (hidden ones too); none when it is missing or not a directory."""

    def command(self, path: str) -> str:
        directory = shlex.quote(path)
        return f"! test -d {directory} || ls -1A {directory}"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line]
