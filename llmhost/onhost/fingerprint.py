"""``onhost.pyz fingerprint``: what this host runs, in a form its twin prints the same.

The disaster-recovery rebuild converges a blank host and then compares it with a host
that was never destroyed. Two hosts converged from the same repository, registry and
archive must print the same JSON here, so what differs between hosts by design is taken
out: each ``--identity NAME=VALUE`` (the host's name, its address, a per-rack proxy) is
replaced by ``{NAME}`` in every path, link target and file's contents before hashing, and
the files that are each host's own (private keys, its certificate, SSH host keys) are
listed without a hash.

    python3 /usr/local/lib/llmhost/onhost.pyz fingerprint --identity host=web1 \\
        --identity address=10.0.0.6

It prints ``{"format", "packages", "files", "excluded", "serving"}``: every installed
package's version; each entry under the managed roots (a file's SHA256, mode, owner and
group; a link's target; a directory's mode and owners); and the release the active colour
serves with its engine binary's SHA256. Exit 0, or 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmhost.onhost.layout import (
    FINGERPRINT_EXCLUDED,
    FINGERPRINT_ROOTS,
    STATE_FILE,
    empty_state,
)

EXIT_OK, EXIT_CANNOT_RUN = 0, 2
FORMAT = 1
DPKG_QUERY = ["dpkg-query", "-W", "-f", "${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"]
CHUNK = 1 << 20
# What a release is (the state's record of it, less when it happened).
RELEASE_FIELDS = ("id", "engine", "executable", "model", "model_digest", "served_model_name")


class Substitution:
    """Each identity value replaced by ``{NAME}``, longest first (an address before a prefix)."""

    def __init__(self, identity: Mapping[str, str]) -> None:
        pairs = [(value, "{" + name + "}") for name, value in identity.items() if value]
        self.pairs = sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)

    def text(self, text: str) -> str:
        for value, placeholder in self.pairs:
            text = text.replace(value, placeholder)
        return text

    def data(self, data: bytes) -> bytes:
        for value, placeholder in self.pairs:
            data = data.replace(value.encode(), placeholder.encode())
        return data


def installed_packages(dpkg_output: str) -> dict[str, str]:
    """``dpkg-query`` lines -> {package: version}, for installed (or held) packages only."""
    found = {}
    for line in dpkg_output.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith(("ii", "hi")):
            found[parts[0]] = parts[1]
    return found


def walk(root: Path) -> Iterator[Path]:
    """``root`` and everything below it, sorted, never following a link."""
    if not os.path.lexists(root):
        return
    yield root
    if root.is_symlink() or not root.is_dir():
        return
    try:
        children = sorted(root.iterdir())
    except OSError:
        return
    for child in children:
        yield from walk(child)


def _owners(info: os.stat_result) -> dict[str, str]:
    def user(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def group(gid: int) -> str:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)

    return {"owner": user(info.st_uid), "group": group(info.st_gid)}


def describe(path: Path, substitution: Substitution) -> dict[str, Any]:
    """One entry: a file's hash (of its contents with the identity replaced), a link, a dir."""
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return {"link": substitution.text(os.readlink(path))}
        entry: dict[str, Any] = {"mode": f"{stat.S_IMODE(info.st_mode):04o}", **_owners(info)}
        if stat.S_ISDIR(info.st_mode):
            return {"directory": True, **entry}
        if not stat.S_ISREG(info.st_mode):
            return {"special": stat.filemode(info.st_mode)[0], **entry}
        contents = substitution.data(path.read_bytes())
        return {"sha256": hashlib.sha256(contents).hexdigest(), **entry}
    except OSError as error:
        return {"error": error.strerror or str(error)}


def is_excluded(path: str, excluded: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in excluded)


def serving(state: Mapping[str, Any], digest: Callable[[str], str | None]) -> dict[str, Any] | None:
    """The active colour's release and its engine binary's digest; None with none active.

    The colour's name is left out on purpose: a twin with a longer history serves the same
    release from the other colour, and that is the same state. So are the times the state
    records (since when it serves, when its gate ran): when, not what.
    """
    active = state.get("active")
    recorded = ((state.get("colours") or {}).get(active) or {}) if active else {}
    if not recorded:
        return None
    release = {key: recorded.get(key) for key in RELEASE_FIELDS}
    release["gate_passed"] = bool((recorded.get("gate") or {}).get("passed"))
    executable = str(recorded.get("executable") or "")
    return {"release": release, "executable_sha256": digest(executable)}


def fingerprint(
    roots: Sequence[str],
    excluded: Sequence[str],
    identity: Mapping[str, str],
    dpkg_output: str,
    state: Mapping[str, Any],
    digest: Callable[[str], str | None],
) -> dict[str, Any]:
    substitution = Substitution(identity)
    files: dict[str, dict[str, Any]] = {}
    left_out: set[str] = set()
    for root in dict.fromkeys(roots):
        for path in walk(Path(root)):
            shown = substitution.text(str(path))
            if is_excluded(str(path), excluded):
                left_out.add(shown)
            else:
                files[shown] = describe(path, substitution)
    return {
        "format": FORMAT,
        "packages": installed_packages(dpkg_output),
        "files": dict(sorted(files.items())),
        "excluded": sorted(left_out),
        "serving": serving(state, digest),
    }


def differences(here: Mapping[str, Any], twin: Mapping[str, Any]) -> list[str]:
    """One line per difference between two fingerprints; an empty list: the same state."""
    lines = []
    if here.get("format") != twin.get("format"):
        lines.append(f"format: {here.get('format')} here, {twin.get('format')} on the twin")
    lines += _mapping_differences("package", here.get("packages", {}), twin.get("packages", {}))
    ours, theirs = here.get("files", {}), twin.get("files", {})
    for path in sorted(set(ours) | set(theirs)):
        if path not in theirs:
            lines.append(f"file {path}: here only")
        elif path not in ours:
            lines.append(f"file {path}: on the twin only")
        elif ours[path] != theirs[path]:
            lines.append(f"file {path}: {_entry_difference(ours[path], theirs[path])}")
    for path in sorted(set(here.get("excluded", [])) ^ set(twin.get("excluded", []))):
        side = "here only" if path in here.get("excluded", []) else "on the twin only"
        lines.append(f"excluded {path}: {side}")
    lines += _serving_differences(here.get("serving"), twin.get("serving"))
    return lines


def _entry_difference(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """Which fields of one file's entry differ: ``sha256 ab.. here, cd.. on the twin``."""
    fields = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    return ", ".join(f"{k} {ours.get(k)} here, {theirs.get(k)} on the twin" for k in fields)


def _mapping_differences(
    what: str, ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> list[str]:
    lines = []
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            mine = ours.get(name, "absent")
            other = theirs.get(name, "absent")
            lines.append(f"{what} {name}: {mine} here, {other} on the twin")
    return lines


def _serving_differences(ours: Any, theirs: Any) -> list[str]:
    if ours == theirs:
        return []
    if not ours or not theirs:
        return [f"serving: {_release_id(ours)} here, {_release_id(theirs)} on the twin"]
    lines = _mapping_differences("serving release", ours["release"], theirs["release"])
    if ours.get("executable_sha256") != theirs.get("executable_sha256"):
        lines.append(
            f"serving engine binary: sha256 {ours.get('executable_sha256')} here, "
            f"{theirs.get('executable_sha256')} on the twin"
        )
    return lines


def _release_id(serving: Any) -> str:
    return f"release {serving['release'].get('id')}" if serving else "nothing"


def file_sha256(path: str) -> str | None:
    """The SHA256 of ``path``, streamed; None when there is no such file."""
    if not path:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def read_state(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return empty_state()
    return found if isinstance(found, dict) else empty_state()


def parse_identity(pairs: Sequence[str]) -> dict[str, str]:
    identity = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.isidentifier() or not value:
            raise ValueError(f"--identity {pair!r}: expected NAME=VALUE (e.g. host=web1)")
        identity[name] = value
    return identity


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz fingerprint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value of this host's own, replaced by {NAME} (repeatable)",
    )
    parser.add_argument("--root", action="append", help="a managed root (default: llmhost's)")
    parser.add_argument("--exclude", action="append", help="a glob listed but not hashed")
    parser.add_argument("--state", default=STATE_FILE, help="the state file")
    arguments = parser.parse_args(argv)
    try:
        identity = parse_identity(arguments.identity)
    except ValueError as error:
        print(f"fingerprint: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        dpkg = subprocess.run(DPKG_QUERY, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"fingerprint: cannot list the installed packages: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        state = read_state(Path(arguments.state))
    except (OSError, ValueError) as error:
        print(f"fingerprint: cannot read {arguments.state}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    found = fingerprint(
        arguments.root or FINGERPRINT_ROOTS,
        arguments.exclude or FINGERPRINT_EXCLUDED,
        identity,
        dpkg,
        state,
        file_sha256,
    )
    print(json.dumps(found, indent=1, sort_keys=True))
    return EXIT_OK
