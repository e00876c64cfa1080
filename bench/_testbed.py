"""What every bench shares: the testbed, waited for until free (two runs never share it),
and taken down at the end."""

from __future__ import annotations

import fcntl
import sys
import time
from collections.abc import Callable

from llmhost.testing.testbed import Testbed
from llmhost.testing.testbed.testbed import MACHINE_LOCK


def testbed_free(testbed: Testbed) -> bool:
    """Nobody is bringing the testbed up or down, and no healthy host is up (in use)."""
    if any(host.healthy() for host in testbed.hosts()):
        return False
    with MACHINE_LOCK.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def wait_for_testbed(testbed: Testbed, minutes: float) -> bool:
    """True once the testbed is free; False when it is still in use after ``minutes``."""
    deadline = time.monotonic() + minutes * 60
    while not testbed_free(testbed):
        if time.monotonic() >= deadline:
            print(
                f"testbed still in use after {minutes:g} minutes (if no run is using it, "
                "a crashed one left it up: `llmhost testbed down`)",
                file=sys.stderr,
            )
            return False
        print("testbed in use by another run; trying again in 60 s", file=sys.stderr)
        time.sleep(60)
    return True


def on_testbed(minutes: float, work: Callable[[Testbed], int]) -> int:
    """Wait for the testbed, run ``work`` on it, and take it down however ``work`` ends.

    Returns ``work``'s exit status, or 2 when the testbed stayed in use.
    """
    testbed = Testbed()
    if not wait_for_testbed(testbed, minutes):
        return 2
    try:
        return work(testbed)
    finally:
        testbed.down()
