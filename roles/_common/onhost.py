"""The host-side tools: one zipapp built from ``llmhost/onhost``, and how roles run them.

One file on the host, ``/usr/local/lib/llmhost/onhost.pyz``, holds the puller,
the runtime control and the soak client, so a role installs (and a second run
checks) one file, not one per tool. The archive is built in memory from the
repository and is byte-for-byte the same for the same sources: entries sorted,
stored uncompressed (zlib versions differ between control machines), with fixed
timestamps and modes. A changed source means a new archive; an unchanged one
uploads nothing.
"""

from __future__ import annotations

import io
import shlex
import weakref
import zipfile
from functools import cache
from pathlib import Path

from pyinfra import host
from pyinfra.api import State
from pyinfra.operations import files, server

from llmhost.onhost.layout import HELPERS_DIR, ONHOST_APP
from llmhost.paths import REPO_ROOT
from roles._common import checked
from roles._common.facts import DirectoryEntries

# Entries in the archive, besides llmhost/onhost itself: the package marker above it.
PACKAGE_ROOT = REPO_ROOT / "llmhost"
SOURCES = PACKAGE_ROOT / "onhost"
MAIN = b"import sys\n\nfrom llmhost.onhost.app import main\n\nsys.exit(main())\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry

# Hosts whose deploy in this run already installs the tools, per pyinfra state.
_planned: weakref.WeakKeyDictionary[State, set[str]] = weakref.WeakKeyDictionary()


def source_files() -> list[Path]:
    """Every module shipped: llmhost/__init__.py and the onhost package, sorted."""
    modules = sorted(p for p in SOURCES.rglob("*.py") if "__pycache__" not in p.parts)
    return [PACKAGE_ROOT / "__init__.py", *modules]


@cache
def build_app() -> bytes:
    """The zipapp's bytes (cached: built once per control-side process)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        entries = [("__main__.py", MAIN)]
        entries += [(p.relative_to(REPO_ROOT).as_posix(), p.read_bytes()) for p in source_files()]
        for name, content in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            archive.writestr(info, content)
    return buffer.getvalue()


def install_onhost_tools() -> None:
    """Put the tools on the host, root-owned; once per host, however many roles ask.

    The model, runtime and gate roles each need them and each may run alone
    (deploy/model.py, deploy/runtime.py, ...), so each calls this; within one run
    only the first call plans the operations.
    """
    planned = _planned.setdefault(host.state, set())
    if host.name in planned:
        return
    planned.add(host.name)
    files.directory(name="llmhost helpers directory", path=HELPERS_DIR, mode="0755")
    checked.put(
        name=f"Host-side tools {ONHOST_APP} (puller, runtime control, soak)",
        src=io.BytesIO(build_app()),
        dest=ONHOST_APP,
        user="root",
        group="root",
        mode="0644",
        create_remote_dir=False,
    )
    # Earlier releases put each tool there as its own file; nothing runs those now.
    app = ONHOST_APP.rsplit("/", 1)[1]
    entries: list[str] = host.get_fact(DirectoryEntries, path=HELPERS_DIR)
    retired = sorted(set(entries) - {app})
    if retired:
        server.shell(
            name=f"{HELPERS_DIR}: only {app} (retired: {', '.join(retired)})",
            commands=["rm -rf " + " ".join(shlex.quote(f"{HELPERS_DIR}/{n}") for n in retired)],
        )


def onhost_command(tool: str, *arguments: str) -> str:
    """The shell command that runs one host-side tool, every argument quoted."""
    return shlex.join(["python3", ONHOST_APP, tool, *arguments])


def runtimectl(*arguments: str) -> str:
    """The runtime control tool's command line (readiness, drain, state, cutover)."""
    return onhost_command("runtimectl", *arguments)
