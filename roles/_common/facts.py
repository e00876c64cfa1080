"""Facts more than one role decides on."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pyinfra.api import FactBase
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

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


class FileSummary(FactBase[dict[str, Any] | None]):
    """A regular file's owner, group, mode and SHA1 in one command; ``None`` for anything else.

    ``None`` (no file, a symlink, a directory, unreadable) means "not known to match": the
    caller hands over to pyinfra's own operation, which reads its own facts and decides.
    """

    def command(self, path: str) -> str:
        file = shlex.quote(path)
        return (
            f"if test -f {file} && ! test -L {file}; then "
            f"stat -c '%U %G %a' {file} && sha1sum {file}; fi 2>/dev/null || true"
        )

    @staticmethod
    def default() -> None:
        return None

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if len(output) != 2:
            return None
        owner = output[0].split()
        digest = output[1].split()
        if len(owner) != 3 or not owner[2].isdigit() or not digest:
            return None
        user, group, mode = owner
        # sha1sum marks a line whose name it escaped (a backslash, a newline) with a "\\"
        return {"user": user, "group": group, "mode": int(mode), "sha1": digest[0].lstrip("\\")}


class UnitSummary(FactBase[dict[str, str]]):
    """A systemd unit's ``SubState`` and ``UnitFileState`` (and ``LoadState``) in one command,
    where pyinfra's ``systemd.service`` reads each in a command of its own.

    Empty on a host without systemctl: the caller then hands over to pyinfra's operation.
    """

    def requires_command(self, unit: str) -> str:
        return "systemctl"

    def command(self, unit: str) -> str:
        return (
            "systemctl show --property Id --property LoadState --property SubState "
            f"--property UnitFileState {shlex.quote(unit)}"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        properties = dict(line.strip().split("=", 1) for line in output if "=" in line)
        return {key: properties[key] for key in UNIT_PROPERTIES if key in properties}


UNIT_PROPERTIES = ("Id", "LoadState", "SubState", "UnitFileState")


class PackageStatus(FactBase[dict[str, str]]):
    """The installed version of each of ``packages`` that dpkg has fully installed.

    One ``dpkg-query`` for just these packages, where pyinfra's ``DebPackages`` lists every
    package of the host. A package that is missing, removed with its configuration left
    (``rc``) or half-installed is not in the result.
    """

    def requires_command(self, packages: list[str]) -> str:
        return "dpkg-query"

    def command(self, packages: list[str]) -> str:
        names = " ".join(shlex.quote(name) for name in sorted(set(packages)))
        return (
            "dpkg-query --show --showformat '${db:Status-Abbrev}\\t${Package}\\t${Version}\\n' "
            f"-- {names} 2>/dev/null || true"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        installed = {}
        for line in output:
            fields = line.split("\t")
            if len(fields) == 3 and fields[0].strip() == "ii":
                installed[fields[1]] = fields[2]
        return installed


class GroupPresent(FactBase[bool]):
    """Whether /etc/group has ``group`` (where pyinfra's ``Groups`` looks, as one line)."""

    def command(self, group: str) -> str:
        return f"awk -F: -v name={shlex.quote(group)} '$1 == name {{ print $1; exit }}' /etc/group"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return bool(output and output[0].strip())


class UserSummary(FactBase[dict[str, str] | None]):
    """An /etc/passwd user's home, shell and primary group, and its home directory's owner,
    in one command (pyinfra's ``server.user`` reads every user, every group, the OS and the
    home directory, one command each); ``None`` when /etc/passwd has no such user.
    """

    def command(self, user: str) -> str:
        name = shlex.quote(user)
        return (
            f"entry=$(awk -F: -v name={name} '$1 == name {{ print; exit }}' /etc/passwd); "
            'test -n "$entry" || exit 0; '
            'printf "%s\\n" "$entry"; '
            f"id -gn {name}; "
            'home=$(printf "%s" "$entry" | cut -d: -f6); '
            "stat -c '%U %G %F' \"$home\" 2>/dev/null || true"
        )

    @staticmethod
    def default() -> None:
        return None

    def process(self, output: list[str]) -> dict[str, str] | None:
        fields = output[0].split(":")
        if len(fields) != 7 or len(output) < 2:
            return None
        summary = {"home": fields[5], "shell": fields[6], "group": output[1].strip()}
        owner = output[2].split(" ", 2) if len(output) > 2 else []
        if len(owner) == 3:
            summary.update(home_user=owner[0], home_group=owner[1], home_type=owner[2])
        return summary


class Leftovers(FactBase[dict[str, list[str]]]):
    """Which of ``units`` run or are enabled, and which of ``paths`` exist, in one command.

    A unit counts as running or enabled by the states pyinfra's ``SystemdStatus`` and
    ``SystemdEnabled`` count; a path exists when it is anything at all, a dangling
    symlink included.
    """

    def command(self, units: list[str], paths: list[str]) -> str:
        show = ""
        if units:
            names = " ".join(shlex.quote(unit) for unit in units)
            show = (
                "systemctl show --property Id --property SubState --property UnitFileState "
                f"-- {names} 2>/dev/null; "
            )
        checks = "".join(
            f"if test -e {p} || test -L {p}; then echo Path={p}; fi; "
            for p in (shlex.quote(path) for path in paths)
        )
        return f"{show}{checks}true"

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {"running": [], "enabled": [], "paths": []}

    def process(self, output: list[str]) -> dict[str, list[str]]:
        found = self.default()
        unit = None
        for line in output:
            key, _, value = line.strip().partition("=")
            if key == "Id":
                unit = value
            elif key == "SubState" and unit and value in SystemdStatus.state_values:
                found["running"].append(unit)
            elif key == "UnitFileState" and unit and value in SystemdEnabled.state_values:
                found["enabled"].append(unit)
            elif key == "Path":
                found["paths"].append(value)
        return found
