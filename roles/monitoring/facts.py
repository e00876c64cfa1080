"""Facts the monitoring role decides on: which OpenPGP keys an APT keyring holds."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

FINGERPRINT = re.compile(r"[0-9A-F]{40}")


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
