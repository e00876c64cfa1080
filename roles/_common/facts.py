"""Facts more than one role decides on."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from llmhost.onhost.layout import empty_state

FINGERPRINT = re.compile(r"[0-9A-F]{40}")  # an OpenPGP v4 fingerprint, as gpg prints it


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


class KeyringFingerprints(FactBase[list[str]]):
    """The primary keys' fingerprints in an OpenPGP keyring file; none when it is missing.

    ``gpg --show-keys`` reads the file without importing it anywhere; it still makes a home
    directory, so it gets a temporary one (a fact changes nothing on the host, not even
    root's ~/.gnupg). Subkeys are not listed: APT trusts a keyring by its primary keys.
    """

    def requires_command(self, path: str) -> str:
        return "gpg"

    def command(self, path: str) -> str:
        keyring = shlex.quote(path)
        return (
            f"if test -e {keyring}; then home=$(mktemp -d) && "
            f'gpg --homedir "$home" --batch --with-colons --show-keys {keyring} 2>/dev/null '
            '| awk -F: \'$1 == "pub" { primary = 1; next } '
            '$1 == "fpr" && primary { print $10; primary = 0 }\'; '
            'rm -rf "$home"; fi'
        )

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if FINGERPRINT.fullmatch(line.strip())]
