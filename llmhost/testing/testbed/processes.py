"""Processes the testbed starts, tracked and stopped by pid, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def alive(pid: int | None, expect: str | None = None, *, patient: bool = True) -> bool:
    """True if ``pid`` runs and, when given, its command line contains ``expect``.

    The kernel reports an empty command line while a process is busy changing its
    memory map (seen with systemd-nspawn booting). For a pid we recorded
    (``patient``) that is read again, and a process that keeps it empty is judged
    by existing. When scanning for processes, an empty command line never matches:
    kernel threads have one too.
    """
    if not pid:
        return False
    for _ in range(10 if patient else 1):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        if state == "Z":
            return False
        if cmdline or expect is None:
            return expect is None or expect in cmdline
        if not patient:
            return False
        time.sleep(0.02)
    return True


def stop(pid: int | None, expect: str | None = None, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; only if the pid is still ours."""
    if not alive(pid, expect):
        return
    assert pid is not None
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, expect):
            return
        time.sleep(0.2)
    _signal(pid, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.1)


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (e.g. a host's rootfs path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name), fragment, patient=False):
            found.append(int(entry.name))
    return found


def read_pidfile(path: Path, wait: float = 10.0) -> int:
    """The pid a daemon wrote, waiting for it to appear."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{path} was not written within {wait:.0f}s")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
