"""pyinfra's file, unit, package, user and group operations, checked first in one command.

On a host that already matches, pyinfra's ``files.put`` reads two facts (the file's
``stat``, then its ``sha1sum``), ``systemd.service`` two (``systemctl show`` for the
state, again for the enablement), ``apt.packages`` one that lists every package of the
host, ``server.user`` four and ``server.group`` two. Each is a round trip over SSH, one
after another, and a re-run of the site on a fleet spends most of its time on them. These
operations read one small fact instead and, when it shows the host already matches, change
nothing; otherwise, or when the fact cannot tell (a symlink, a host without systemctl),
they hand over to pyinfra's own operation, which reads its facts and decides as always. A
check only says "matches" where pyinfra's operation would change nothing either.

Usage is pyinfra's: ``checked.put(name=..., src=..., dest=..., mode="0644")``,
``checked.service(name=..., service="chrony.service", enabled=True)``,
``checked.packages(name=..., packages=["chrony"])``, ``checked.group(name=..., group=...)``,
``checked.user(name=..., user=..., group=..., home=..., shell=...)``; and
``checked.retired(name=..., units=[...], paths=[...])`` for what a host no longer runs,
where pyinfra needs an operation (and its facts) for each unit and each file.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from typing import IO, Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.api.util import get_file_sha1
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util.files import ensure_mode_int

from llmhost.render import render
from roles._common.facts import (
    FileSummary,
    GroupPresent,
    Leftovers,
    PackageStatus,
    UnitSummary,
    UserSummary,
)

UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap",
    ".target", ".path", ".timer", ".slice", ".scope",
)  # fmt: skip


def file_matches(
    found: dict[str, Any] | None,
    src: str | IO[Any],
    user: str | None,
    group: str | None,
    mode: str | int | None,
) -> bool:
    """Whether ``found`` (a ``FileSummary``) is ``src``'s content with this owner and mode."""
    return (
        found is not None
        and found["sha1"] == get_file_sha1(src)
        and (not user or found["user"] == user)
        and (not group or found["group"] == group)
        and (not mode or found["mode"] == ensure_mode_int(mode))
    )


@operation()
def put(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: str | int | None = None,
    create_remote_dir: bool = True,
) -> Any:
    """``files.put``: upload ``src`` (an absolute path, or a file object) to ``dest``.

    + create_remote_dir: make ``dest``'s directory when missing (as ``files.put``)
    """
    if file_matches(host.get_fact(FileSummary, path=dest), src, user, group, mode):
        host.noop(f"file {dest} is already uploaded")
        return
    yield from files.put._inner(
        src=src,
        dest=dest,
        user=user,
        group=group,
        mode=mode,
        create_remote_dir=create_remote_dir,
    )


def put_template(
    name: str,
    path: str,
    dest: str,
    *,
    mode: str,
    user: str = "root",
    group: str = "root",
    **variables: Any,
) -> OperationMeta:
    """Render ``templates/<path>`` to ``dest`` on the current host with an explicit mode.

    Rendered here by ``llmhost.render.render``, so what a unit test renders is byte for
    byte what the host gets. pyinfra's arguments (``_sudo``, ``_temp_dir``, ``_if``) go to
    the operation; every other keyword is a template variable. The parent directory must
    exist: pyinfra would otherwise create it with the file's owner, and on a fresh host
    hand e.g. /etc/llmhost to whoever owns the last file written there. Roles make their
    directories explicitly.
    """
    options = {key: value for key, value in variables.items() if key.startswith("_")}
    content = render(path, **{k: v for k, v in variables.items() if not k.startswith("_")})
    return put(
        name=name,
        src=StringIO(content),
        dest=dest,
        user=user,
        group=group,
        mode=mode,
        create_remote_dir=False,
        **options,
    )


def unit_name(service: str) -> str:
    """``nginx`` -> ``nginx.service``, as ``systemd.service`` names a unit given bare."""
    return service if service.endswith(UNIT_SUFFIXES) else f"{service}.service"


def unit_matches(
    found: dict[str, str], unit: str, running: bool | None, enabled: bool | None
) -> bool:
    """Whether ``found`` (a ``UnitSummary`` of ``unit``) is running and enabled as wanted,
    by the same states that pyinfra's ``SystemdStatus`` and ``SystemdEnabled`` count."""
    if found.get("Id") != unit or "SubState" not in found or "UnitFileState" not in found:
        return False
    is_running = found["SubState"] in SystemdStatus.state_values
    is_enabled = found["UnitFileState"] in SystemdEnabled.state_values
    return (running is None or running == is_running) and (enabled is None or enabled == is_enabled)


@operation()
def service(
    service: str,
    running: bool | None = True,
    restarted: bool = False,
    reloaded: bool = False,
    enabled: bool | None = None,
    daemon_reload: bool = False,
) -> Any:
    """``systemd.service``: ``service`` running (or stopped), enabled (or not).

    + restarted, reloaded, daemon_reload: as ``systemd.service``; any of them set hands
      over to it without a check
    """
    unit = unit_name(service)
    settled = not (restarted or reloaded or daemon_reload)
    if settled and unit_matches(host.get_fact(UnitSummary, unit=unit), unit, running, enabled):
        running_word = {True: "running", False: "stopped", None: "either"}[running]
        enabled_word = {True: "enabled", False: "disabled", None: "either"}[enabled]
        host.noop(f"unit {unit} is as wanted (running: {running_word}, at boot: {enabled_word})")
        return
    yield from systemd.service._inner(
        service=unit,
        running=running,
        restarted=restarted,
        reloaded=reloaded,
        enabled=enabled,
        daemon_reload=daemon_reload,
    )


def packages_match(found: dict[str, str], packages: Sequence[str]) -> bool:
    """Whether every one of ``packages`` (``name`` or ``name=version``) is in ``found``
    (a ``PackageStatus``), at that version where one is given."""
    for package in packages:
        name, pinned, version = package.partition("=")
        if name not in found or (pinned and found[name] != version):
            return False
    return True


@operation()
def packages(
    packages: Sequence[str],
    update: bool = False,
    no_recommends: bool = False,
    extra_install_args: str | None = None,
) -> Any:
    """``apt.packages``: each of ``packages`` installed (``name=version`` pins a version).

    + update: ``apt-get update`` first; hands over to ``apt.packages`` without a check
    """
    names = [package.partition("=")[0] for package in packages]
    if not update and packages_match(host.get_fact(PackageStatus, packages=names), packages):
        host.noop(f"{', '.join(names)} installed")
        return
    yield from apt.packages._inner(
        packages=list(packages),
        update=update,
        no_recommends=no_recommends,
        extra_install_args=extra_install_args,
    )


@operation()
def group(group: str, system: bool = False) -> Any:
    """``server.group``: ``group`` exists (made a system group with ``system``)."""
    if host.get_fact(GroupPresent, group=group):
        host.noop(f"group {group} exists")
        return
    yield from server.group._inner(group=group, system=system)


def user_matches(
    found: dict[str, str] | None, user: str, group: str, home: str, shell: str
) -> bool:
    """Whether ``found`` (``user``'s ``UserSummary``) has this primary group, home and shell,
    and its home is a directory owned by ``user`` and ``group`` (what ``server.user`` makes
    sure of)."""
    return (
        found is not None
        and (found["group"], found["home"], found["shell"]) == (group, home, shell)
        and found.get("home_type") == "directory"
        and (found.get("home_user"), found.get("home_group")) == (user, group)
    )


@operation()
def user(
    user: str,
    group: str,
    home: str,
    shell: str,
    system: bool = False,
    create_home: bool = False,
) -> Any:
    """``server.user``: ``user`` exists with this primary group, home and shell, and owns its
    home directory."""
    if user_matches(host.get_fact(UserSummary, user=user), user, group, home, shell):
        host.noop(f"user {user} exists")
        return
    yield from server.user._inner(
        user=user,
        group=group,
        home=home,
        shell=shell,
        system=system,
        create_home=create_home,
    )


@operation()
def retired(
    units: Sequence[str] = (), paths: Sequence[str] = (), directories: Sequence[str] = ()
) -> Any:
    """``units`` stopped and disabled, then ``paths`` (files, symlinks) and ``directories``
    (with what they hold) removed, all checked in one command.

    A unit still running or enabled goes through ``systemd.service`` (stopped, disabled);
    a path still there is removed as ``files.file`` and ``files.link`` remove theirs
    (``rm -f``, which fails on a directory), a directory as ``files.directory`` does
    (``rm -rf``).
    """
    everything = [*paths, *directories]
    left = host.get_fact(Leftovers, units=list(units), paths=everything)
    stale = [unit for unit in units if unit in left["running"] or unit in left["enabled"]]
    if not stale and not set(everything) & set(left["paths"]):
        host.noop(f"retired: {', '.join([*units, *everything])}")
        return
    for unit in stale:
        yield from systemd.service._inner(service=unit, running=False, enabled=False)
    for flag, removed in (("-f", paths), ("-rf", directories)):
        for path in removed:
            if path in left["paths"]:
                yield StringCommand("rm", flag, QuoteString(path))
