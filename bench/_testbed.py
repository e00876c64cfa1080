"""What the benches share: the testbed, waited for until free (two runs never share it) and
taken down at the end, and tiny models published to its registry for a host to serve."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from llmhost import converge
from llmhost.catalog import model_toml
from llmhost.paths import REPO_ROOT
from llmhost.secrets import add_api_key, api_keys
from llmhost.testing.testbed import Testbed
from llmhost.testing.testbed.testbed import MACHINE_LOCK
from llmhost.testing.testmodels import write_tiny_gguf

TESTBED_INVENTORY = "inventories/testbed.py"


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


def use_tiny_catalog(root: Path, names: Sequence[str], first_seed: int) -> None:
    """A model catalog of its own under ``root``: one tiny GGUF model per name (seeds from
    ``first_seed``), for this process and the commands it runs."""
    catalog = root / "catalog"
    catalog.mkdir()
    for seed, name in enumerate(names, start=first_seed):
        weights = write_tiny_gguf(root / "src" / name / f"{name}.gguf", seed=seed)
        source = {"kind": "local", "path": str(weights.parent)}
        (catalog / f"{name}.toml").write_text(
            model_toml(name, "gguf", source, [(weights.name, weights)])
        )
    os.environ.update(
        {
            "LLMHOST_MODELS_DIR": str(catalog),
            "LLMHOST_RUNTIME_BUILDS": str(root / "runtime-builds.toml"),
        }
    )


def publish(testbed: Testbed, identity: str, names: Sequence[str]) -> bool:
    """The site on every testbed host, ``identity`` given a key (the gateway admits no one
    without), each model mirrored and llama.cpp built and pushed; False (said) on a failure."""
    secrets = testbed.root / "secrets"
    if identity not in api_keys(secrets):
        add_api_key(secrets, identity)
    if not succeeded(converge.run(TESTBED_INVENTORY), "the site's converge"):
        return False
    steps: list[tuple[tuple[str, ...], str]]
    steps = [(("models", "mirror", name), f"mirroring {name}") for name in names]
    steps.append((("runtimes", "build", "--class", "cpu"), "building llama.cpp"))
    for command, what in steps:
        if not succeeded(llmhost_cli(*command, "--inventory", TESTBED_INVENTORY), what):
            return False
    return True


def llmhost_cli(*command: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "llmhost.cli", *command]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def succeeded(done: subprocess.CompletedProcess[str] | converge.RunResult, what: str) -> bool:
    """Whether a command or a converge exited 0; if not, says so with its last stderr."""
    if done.returncode != 0:
        print(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
    return done.returncode == 0
