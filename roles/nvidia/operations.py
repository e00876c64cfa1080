"""The nvidia role's operations: the driver in one apt transaction, and a reboot proven by a
new boot id. (The repository key is trusted by roles._common.operations.apt_key_trusted.)"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.connectors.util import clear_askpass_cache, remove_any_sudo_askpass_file
from pyinfra.facts.deb import DebPackages

from roles.nvidia.defaults import DRIVER_VERSION
from roles.nvidia.facts import BootId

APT_INSTALL = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)


# -- the driver's packages --------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """An exact driver release, as `nvidia_driver_version` gives it."""

    text: str  # 550.127.08 or 550.127.08-1
    release: str  # 550.127.08: what the kernel module and NVML report
    branch: str  # 550
    revision: str | None  # 1, 0ubuntu1, or None: any packaging of the release

    @classmethod
    def parse(cls, text: str) -> Release | None:
        found = DRIVER_VERSION.fullmatch(text)
        if not found:
            return None
        return cls(text, found["release"], found["branch"], found["revision"])

    @property
    def pin(self) -> str:
        """apt's version pattern: this package revision, or any revision of the release."""
        return self.text if self.revision else f"{self.release}-*"

    def matches(self, version: str) -> bool:
        version = re.sub(r"^[0-9]+:", "", version)  # an epoch, should one appear
        return version == self.text if self.revision else version.startswith(f"{self.release}-")

    def newer_than_this(self, version: str) -> bool:
        """Whether an installed ``version`` is a later release (installing this downgrades)."""
        found = DRIVER_VERSION.match(re.sub(r"^[0-9]+:", "", version))
        return found is not None and numbers(found["release"]) > numbers(self.release)


def numbers(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


@dataclass(frozen=True)
class Wanted:
    """What the host must have: ``pinned`` at the release, ``unpinned`` at any version;
    installed packages matching ``owned`` but not wanted are the old ones to replace."""

    release: Release
    pinned: tuple[str, ...]
    unpinned: tuple[str, ...]
    owned: tuple[re.Pattern[str], ...]


@dataclass(frozen=True)
class Transaction:
    install: tuple[str, ...]  # name=version for the pinned, bare names for the others
    remove: tuple[str, ...]  # replaced in the same transaction (another branch's names)
    downgrade: bool

    def command(self) -> str:
        arguments = [*self.install, *(f"{name}-" for name in self.remove)]
        downgrades = " --allow-downgrades" if self.downgrade else ""
        return f"{APT_INSTALL}{downgrades} " + " ".join(shlex.quote(a) for a in arguments)


def transaction(installed: Mapping[str, Sequence[str]], wanted: Wanted) -> Transaction | None:
    """The one apt transaction that gets from ``installed`` to ``wanted``; None when none is
    needed. Every wanted package is named, each pinned one with its version pattern, so
    apt resolves the whole change at once instead of package by package."""
    release = wanted.release
    stale = [
        name
        for name in wanted.pinned
        if not any(release.matches(v) for v in installed.get(name, ()))
    ]
    missing = [name for name in wanted.unpinned if name not in installed]
    wanted_names = {*wanted.pinned, *wanted.unpinned}
    replaced = sorted(
        name
        for name in installed
        if name not in wanted_names and any(p.fullmatch(name) for p in wanted.owned)
    )
    if not stale and not missing and not replaced:
        return None
    downgrade = any(
        release.newer_than_this(version)
        for name in (*wanted.pinned, *replaced)
        for version in installed.get(name, ())
    )
    return Transaction(
        install=(*(f"{name}={release.pin}" for name in wanted.pinned), *wanted.unpinned),
        remove=tuple(replaced),
        downgrade=downgrade,
    )


@operation()
def driver_installed(wanted: Wanted, description: str) -> Generator[Any, None, None]:
    """The driver's packages at the release, installed, replaced or downgraded in one
    ``apt-get install`` after the package lists are refreshed; nothing when they are.

    The pins (apt preferences) are written before this runs, so apt resolves every
    dependency to the same release and no version is left half-changed.
    """
    change = transaction(host.get_fact(DebPackages), wanted)
    if change is None:
        host.noop(f"{description} is installed")
        return
    yield StringCommand("apt-get update")
    yield StringCommand(change.command())


# -- the reboot ----------------------------------------------------------------------------------


REBOOT_COMMAND = "( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &"


@operation(is_idempotent=False)
def rebooted(timeout_s: int, interval_s: int = 5) -> Generator[Any, None, None]:
    """Reboot and wait, up to ``timeout_s``, for the host to answer with a new boot id.

    pyinfra's server.reboot is the model (detached reboot, askpass files forgotten, a
    reconnect loop) but it compares uptime, which a host that comes back fast, or a VM
    whose clock jumps, can get wrong; a boot id is new at every boot and only then.
    """
    before: list[str] = []

    def forget_askpass(state: Any, host: Any) -> bool:
        remove_any_sudo_askpass_file(host)
        return True

    def remember_boot(state: Any, host: Any) -> bool:
        before.append(host.get_fact(BootId))
        return True

    def wait_for_new_boot(state: Any, host: Any) -> bool:
        return wait_for_boot(host, before[0], timeout_s, interval_s)

    yield FunctionCommand(forget_askpass, (), {})
    yield FunctionCommand(remember_boot, (), {})
    yield StringCommand(REBOOT_COMMAND)
    yield FunctionCommand(wait_for_new_boot, (), {})


def wait_for_boot(target: Any, old_boot: str, timeout_s: int, interval_s: int) -> bool:
    """Reconnect until ``target`` reports a boot id other than ``old_boot``."""
    clear_askpass_cache(target)  # they lived in the session that the reboot ends
    target.disconnect()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        target.connect(show_errors=False)
        if target.connected:
            if target.get_fact(BootId) not in ("", None, old_boot):
                clear_askpass_cache(target)
                return True
            target.disconnect()  # still the old boot: the reboot has not started yet
    logger.error(
        f"{target.print_prefix}did not come back with a new boot id within {timeout_s} s "
        "of the reboot. Fix: check the host's console (a kernel or DKMS build problem shows "
        "there), then run the deploy again; raise nvidia_reboot_timeout_s for slow firmware"
    )
    return False
