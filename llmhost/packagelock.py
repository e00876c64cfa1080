"""Package locks: every Debian package a host has, at the version it has it.

`llmhost lock-packages` reads a converged host's installed packages (its fingerprint's
list) into a JSON file in the repository; `base_package_lock` names that file, and the
base role pins each package to its version with APT preferences at priority 1000 before
it installs anything. Dependencies are in the lock too, so a host rebuilt from the lock
installs the versions its twin runs, not the newest the archive holds. A lock pins, it
does not fetch: the APT sources must still hold each version (a snapshot mirror does;
Debian's own archive drops a version when the next point release replaces it), and the
rebuild's fingerprint comparison names any package that came out at another version.

    {"format": 1, "taken_from": "tb2", "packages": {"nginx": "1.22.1-9+deb12u2", ...}}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import REPO_ROOT

LOCK_FORMAT = 1
LOCK_KEY = "base_package_lock"
APT_PINS_FILE = "/etc/apt/preferences.d/llmhost-pins"
# 1000: APT installs the pinned version, a downgrade included. The roles' own pins rank
# above it: APT takes the first entry that matches a version, and llmhost-grafana.pref and
# llmhost-nvidia sort before llmhost-pins, so a version the repository moves (the driver,
# Grafana's) is never held back by a lock taken before the move.
PIN_PRIORITY = 1000
# Debian policy 5.6.1 (names) and 5.6.12 (versions); what dpkg itself accepts.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
PACKAGE_VERSION = re.compile(r"([0-9]+:)?[0-9][A-Za-z0-9.+~:-]*")
RELOCK = "take it again from the twin: `llmhost lock-packages INVENTORY TWIN --out FILE`"


def lock_path(value: str) -> Path:
    """The lock's file: a relative ``base_package_lock`` is from the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def read_lock(value: str, host: str | None = None) -> dict[str, str]:
    """The lock's ``{package: version}``; ConfigError names the file, the entry and the fix."""
    path = lock_path(value)

    def refused(problem: str, fix: str = RELOCK) -> ConfigError:
        return ConfigError(f"{path}: {problem}", key=LOCK_KEY, fix=fix, host=host)

    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise refused(
            "no such file",
            "give the lock's path from the repository root, e.g. "
            "'inventories/locks/packages-prod.json' (`llmhost lock-packages` writes it)",
        ) from None
    except (OSError, ValueError) as error:
        raise refused(f"is not a JSON package lock ({error})") from None
    if not isinstance(document, dict) or document.get("format") != LOCK_FORMAT:
        raise refused(f"is not a package lock of format {LOCK_FORMAT}")
    packages = document.get("packages")
    if not isinstance(packages, dict) or not packages:
        raise refused("has no `packages` mapping of package to version")
    for name, version in packages.items():
        if not PACKAGE_NAME.fullmatch(str(name)):
            raise refused(f"{name!r} is not a Debian package name")
        if not isinstance(version, str) or not PACKAGE_VERSION.fullmatch(version):
            raise refused(f"the version of {name} ({version!r}) is not a Debian version")
    return dict(packages)


def lock_document(taken_from: str, installed: dict[str, str]) -> dict[str, Any]:
    """A lock of ``installed`` (the fingerprint's ``{package[:arch]: version}``).

    The architecture qualifier goes (APT pins a package by name); one package installed
    for two architectures at two versions cannot be pinned by name, and is refused.
    """
    packages: dict[str, str] = {}
    for qualified, version in sorted(installed.items()):
        name = qualified.split(":", 1)[0]
        if packages.get(name, version) != version:
            raise ConfigError(
                f"{taken_from} has {name} at two versions ({packages[name]}, {version}) for "
                "two architectures; APT pins a package by name",
                key=None,
                fix=f"install one version of {name} for every architecture on {taken_from}",
                host=taken_from,
            )
        packages[name] = version
    return {"format": LOCK_FORMAT, "taken_from": taken_from, "packages": packages}


def apt_preferences(packages: dict[str, str], source: str) -> str:
    """The APT preferences file that pins each package to its locked version."""
    stanzas = [
        f"Package: {name}\nPin: version {version}\nPin-Priority: {PIN_PRIORITY}\n"
        for name, version in sorted(packages.items())
    ]
    header = (
        f"# Managed by llmhost from {source} (base_package_lock): each package at the\n"
        "# version its lock names. Take a new lock to move a version.\n\n"
    )
    return header + "\n".join(stanzas)
