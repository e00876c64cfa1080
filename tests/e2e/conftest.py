"""Real hosts for end-to-end tests: the testbed, booted once per session.

Tests that need hosts call ``testbed.up(2)`` themselves (cheap when they are
already up and healthy), so no test depends on another having run first. The
session ends with ``testbed down``: there is one testbed per machine, and the
tests own it while they run.
Without root or the testbed's tools the tests are skipped with the reason,
unless LLMHOST_REQUIRE_E2E=1 (as the README's test command sets), where that is
an error: CI must never pass by skipping the hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import testinfra

from llmhost import converge
from llmhost.catalog import model_toml
from llmhost.paths import REPO_ROOT
from llmhost.secrets import add_api_key, api_keys
from llmhost.testing.testbed import Testbed, TestbedHost
from llmhost.testing.testbed.testbed import REQUIRED_TOOLS
from llmhost.testing.testmodels import write_tiny_gguf, write_tiny_safetensors_model

HOSTS = 2
# Modules that change the standing hosts for good run after all others, in this order:
# the edge boots tb3 as its edge and leaves it blank for the fleet's serving twin;
# the fleet replaces tb2 (the disaster-recovery registry) with a blank serving host, and
# the walkthrough's `llmhost demo --down` takes the testbed down.
RUN_LAST = ("test_edge.py", "test_fleet.py", "test_single_box.py", "test_walkthrough.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move RUN_LAST's modules to the end; every other test keeps its place (a stable sort)."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return RUN_LAST.index(name) + 1 if name in RUN_LAST else 0

    items.sort(key=rank)


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return (
            "the testbed boots hosts with systemd-nspawn and makes network namespaces: needs root"
        )
    missing = sorted(tool for tool in REQUIRED_TOOLS if not shutil.which(tool))
    if missing:
        return f"testbed tools missing: {', '.join(missing)} (scripts/setup installs them)"
    return None


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    reason = _missing_prerequisite()
    if reason:
        if os.environ.get("LLMHOST_REQUIRE_E2E") == "1":
            pytest.fail(f"end-to-end tests required but cannot run: {reason}")
        pytest.skip(reason)
    bed = Testbed()
    try:
        bed.up(HOSTS)
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="module")
def hosts(testbed: Testbed) -> list[TestbedHost]:
    return testbed.up(HOSTS)


def connect_testinfra(testbed: Testbed, host: TestbedHost) -> testinfra.host.Host:
    """A testinfra host over paramiko that refuses unknown host keys.

    The plugin's own connection accepts any host key with a warning, so the
    client is made here with the testbed's known_hosts and a reject policy.
    """
    target = testinfra.get_host(
        f"paramiko://root@{host.address}?ssh_identity_file={testbed.ssh_key}"
    )
    client = paramiko.SSHClient()
    client.load_host_keys(str(testbed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username="root", key_filename=str(testbed.ssh_key), timeout=10)
    target.backend.__dict__["client"] = client
    return target


def write_inventory(path, testbed: Testbed, hosts: list[TestbedHost], **edits) -> str:
    """An inventory file of the testbed hosts, with per-host data edits.

    ``edits`` maps a host name to {key: value}; a value of None removes the key.
    The first two hosts form the `registry` group and the first is the `monitoring` host,
    as in inventories/testbed.py. Each host's data declares where the testbed's endpoints
    are (`residency_endpoints`, from `Testbed.inventory_data`), so the inventory passes the
    residency audit; an edit of `residency_endpoints` replaces those declarations.
    """
    entries = []
    for host in hosts:
        data = testbed.inventory_data(host)
        for key, value in edits.get(host.name, {}).items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        entries.append((host.name, data))
    path.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\nmonitoring = testbed[:1]\n")
    return str(path)


# -- runtimes: models, a llama.cpp build and API keys, shared by the serving tests --------

BUILD_CACHE = Path(os.environ.get("LLMHOST_BUILD_CACHE", Path.home() / ".cache" / "llmhost"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def runtime_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two releases of a tiny GGUF, a safetensors model, and a builds file of our own."""
    root = tmp_path_factory.mktemp("runtime")
    directory = root / "catalog"
    directory.mkdir()
    for name, seed in (("rt-one", 11), ("rt-two", 12), ("rt-unpulled", 13)):
        path = write_tiny_gguf(root / "sources" / name / f"{name}.gguf", seed=seed)
        source = {"kind": "local", "path": str(path.parent)}
        (directory / f"{name}.toml").write_text(
            model_toml(name, "gguf", source, [(path.name, path)])
        )
    st = root / "sources" / "rt-st"
    relative = write_tiny_safetensors_model(st)
    (directory / "rt-st.toml").write_text(
        model_toml(
            "rt-st",
            "safetensors",
            {"kind": "local", "path": str(st)},
            [(str(r), st / r) for r in relative],
        )
    )
    saved = {k: os.environ.get(k) for k in ("LLMHOST_MODELS_DIR", "LLMHOST_RUNTIME_BUILDS")}
    os.environ["LLMHOST_MODELS_DIR"] = str(directory)
    os.environ["LLMHOST_RUNTIME_BUILDS"] = str(root / "runtime-builds.toml")
    try:
        yield directory
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sync_to_dr(
    testbed: Testbed, hosts: list[TestbedHost], names: tuple[str, ...] = ()
) -> tuple[str, str]:
    """Copy the models ``names`` (default: every mirrored one) from tb1's registry (primary)
    to tb2's (DR)."""
    primary, dr = (f"{h.address}:5000" for h in hosts[:2])
    synced = cli(
        "models", "sync", *names, "--from", primary, "--to", dr,
        "--secrets-dir", str(testbed.root / "secrets"),
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr[-2000:]
    return primary, dr


PUBLISHED_MODELS = ("rt-one", "rt-two", "rt-unpulled", "rt-st")


@pytest.fixture(scope="session")
def published(testbed, runtime_catalog):
    """Registries up, models mirrored to both, llama.cpp built for `cpu` and pushed to both,
    and an API key for the tests' identity (`tests`) in the testbed's secrets."""
    return publish(testbed)


def publish(testbed: Testbed) -> str:
    """What `published` does; a module that runs after hosts were brought back blank
    (test_testbed, test_upgrade) calls it again. Nothing present is pushed twice."""
    hosts = testbed.up(HOSTS)
    if "tests" not in api_keys(testbed.root / "secrets"):
        add_api_key(testbed.root / "secrets", "tests")
    site = converge.run("inventories/testbed.py")
    assert site.returncode == 0 and site.errors == 0, site.stderr[-3000:]
    for name in PUBLISHED_MODELS:
        done = cli("models", "mirror", name, "--inventory", "inventories/testbed.py")
        assert done.returncode == 0, done.stderr[-2000:]
    # These alone: other modules mirror more into the catalog, and after hosts were brought
    # back blank their registries no longer hold those.
    sync_to_dr(testbed, hosts, PUBLISHED_MODELS)
    built = cli(
        "runtimes",
        "build",
        "--class",
        "cpu",
        "--inventory",
        "inventories/testbed.py",
        "--cache-dir",
        str(BUILD_CACHE),
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert "sha256:" in built.stdout
    return built.stdout
