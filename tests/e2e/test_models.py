"""Models on real hosts: mirror into the testbed's registries, pull by digest, and faults.

The Hugging Face hub is unreachable from test machines, so the hub-sourced model is
served by ``llmhost.testing.fakehub``, a local stand-in for the hub's file-resolve endpoints;
everything from ``huggingface_hub.snapshot_download`` onwards is the production path.
The registries are real (Debian's distribution registry, TLS from the llmhost CA,
htpasswd auth) on tb1 (primary) and tb2 (DR).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmhost import converge
from llmhost.catalog import find, model_toml
from llmhost.onhost.pull.request import DEFAULT_CHUNK_SIZE
from llmhost.testing.fakehub import FakeHub
from llmhost.testing.testmodels import write_tiny_gguf, write_tiny_safetensors_model
from roles.model.defaults import STORE, model_directory
from roles.model.operations import pull_command
from tests.e2e.conftest import cli, sync_to_dr, write_inventory

pytestmark = pytest.mark.e2e

HF_REPO = "llmhost-test/tiny-st"
HF_REVISION = "5d0c7f3e9a1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Model files for: two small GGUFs, one to corrupt, a 68 MB one, and a hub model."""
    root = tmp_path_factory.mktemp("models")
    directory = root / "catalog"
    directory.mkdir()
    sources = root / "sources"
    local = [
        ("tiny-gguf", {}),
        ("tiny-other", {"seed": 3}),
        ("tiny-corrupt", {"seed": 7}),
        ("tiny-big", {"embedding": 512, "blocks": 4, "heads": 8}),
    ]
    for name, options in local:
        path = write_tiny_gguf(sources / name / f"{name}.gguf", **options)
        source = {"kind": "local", "path": str(path.parent)}
        (directory / f"{name}.toml").write_text(
            model_toml(name, "gguf", source, [(path.name, path)])
        )
    hub_dir = root / "hub" / "tiny-st"
    relative = write_tiny_safetensors_model(hub_dir)
    source = {"kind": "huggingface", "repo": HF_REPO, "revision": HF_REVISION}
    (directory / "tiny-st.toml").write_text(
        model_toml("tiny-st", "safetensors", source, [(str(r), hub_dir / r) for r in relative])
    )
    previous = os.environ.get("LLMHOST_MODELS_DIR")
    os.environ["LLMHOST_MODELS_DIR"] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("LLMHOST_MODELS_DIR", None)
        else:
            os.environ["LLMHOST_MODELS_DIR"] = previous


@pytest.fixture(scope="module")
def mirrored(testbed, hosts, catalog):
    """Registries converged; every model mirrored to tb1 and synced to tb2."""
    site = converge.run("inventories/testbed.py")
    assert site.returncode == 0 and site.errors == 0, site.stderr[-3000:]
    hub_root = catalog.parent / "hub"
    with FakeHub({HF_REPO: (HF_REVISION, hub_root / "tiny-st")}) as hub:
        for name in ("tiny-gguf", "tiny-other", "tiny-corrupt", "tiny-big", "tiny-st"):
            done = cli(
                "models",
                "mirror",
                name,
                "--inventory",
                "inventories/testbed.py",
                "--hf-endpoint",
                hub.url,
            )
            assert done.returncode == 0, done.stderr
    return sync_to_dr(testbed, hosts)


def inventory_for(tmp_path: Path, testbed, hosts, pullers, **data) -> str:
    """All testbed hosts (so both registries are known), with ``data`` on ``pullers`` only."""
    return write_inventory(
        tmp_path / "inventory.py", testbed, hosts, **{h.name: data for h in pullers}
    )


def remote_sha256(testbed, host, path: str) -> str:
    return testbed.ssh(host, f"sha256sum {shlex.quote(path)}").split()[0]


def test_mirror_records_the_digest_and_both_registries_verify(catalog, mirrored):
    for name in ("tiny-gguf", "tiny-st"):
        model = find(name, catalog)
        assert model.digest and model.digest.startswith("sha256:")
        verified = cli("models", "verify", name, "--inventory", "inventories/testbed.py")
        assert verified.returncode == 0, verified.stderr
        assert [
            line.split(" verified on ")[1].split()[0] for line in verified.stdout.splitlines()
        ] == list(mirrored)


def test_pull_on_two_hosts_is_byte_identical_and_the_second_deploy_changes_nothing(
    tmp_path, testbed, hosts, catalog, mirrored
):
    model = find("tiny-gguf", catalog)
    inventory = inventory_for(tmp_path, testbed, hosts, hosts, model_name=model.name)

    first = converge.run(inventory, "deploy/model.py")
    second = converge.run(inventory, "deploy/model.py")

    assert first.returncode == 0 and first.errors == 0, first.stderr[-3000:]
    directory = model_directory(model.name, str(model.digest))
    for host in hosts:
        path = f"{directory}/{model.files[0].path}"
        assert remote_sha256(testbed, host, path) == model.files[0].sha256
        blob = f"{STORE}/sha256/{model.files[0].sha256}"
        inodes = testbed.ssh(host, f"stat -c %i {path} {blob}").split()
        assert inodes[0] == inodes[1], "the model file is a hard link to the verified store blob"
    assert second.returncode == 0 and second.changes == 0, second.changed_operations()


def test_hub_model_pulls_with_nested_paths_from_the_pinned_revision(
    tmp_path, testbed, hosts, catalog, mirrored
):
    model = find("tiny-st", catalog)
    assert any("/" in f.path for f in model.files)
    inventory = inventory_for(tmp_path, testbed, hosts, hosts, model_name=model.name)

    result = converge.run(inventory, "deploy/model.py")

    assert result.returncode == 0, result.stderr[-3000:]
    directory = model_directory(model.name, str(model.digest))
    for host in hosts:
        for pinned in model.files:
            assert remote_sha256(testbed, host, f"{directory}/{pinned.path}") == pinned.sha256


def test_a_corrupt_blob_in_the_registry_fails_the_pull_and_leaves_nothing(
    tmp_path, testbed, hosts, catalog, mirrored
):
    model = find("tiny-corrupt", catalog)
    blob = model.files[0].sha256
    data = f"/var/lib/docker-registry/docker/registry/v2/blobs/sha256/{blob[:2]}/{blob}/data"
    testbed.ssh(hosts[0], f"printf 'X' | dd of={data} bs=1 seek=4096 conv=notrunc status=none")
    puller = hosts[1]
    inventory = inventory_for(tmp_path, testbed, hosts, [puller], model_name=model.name)

    result = converge.run(inventory, "deploy/model.py")

    assert result.returncode != 0
    assert f"sha256:{blob}" in result.stderr and "corrupt blob in registry" in result.stderr
    assert model.files[0].path in result.stderr
    directory = model_directory(model.name, str(model.digest))
    assert testbed.ssh(puller, f"ls -d {directory}", check=False) == ""
    stored = testbed.ssh(puller, f"ls -A {STORE}/sha256/").split()
    assert not [name for name in stored if blob in name], "no blob and no partial left"


@pytest.fixture
def slow_link(hosts):
    """Limit what reaches the second host to 80 Mbit/s, so a transfer can be cut midway."""
    link = f"lhtb{hosts[1].index}h"
    subprocess.run(
        [
            "tc",
            "qdisc",
            "add",
            "dev",
            link,
            "root",
            "tbf",
            "rate",
            "80mbit",
            "burst",
            "64kb",
            "latency",
            "400ms",
        ],
        check=True,
    )
    yield
    subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False)


def test_an_interrupted_transfer_resumes_where_it_stopped(
    testbed, hosts, catalog, mirrored, slow_link
):
    model = find("tiny-big", catalog)
    puller, blob = hosts[1], model.files[0]
    command = pull_command(model.name, str(model.digest), model.repository, list(mirrored), jobs=1)
    partial = f"{STORE}/sha256/{blob.sha256}.partial"
    testbed.ssh(puller, f"nohup {command} >/tmp/pull.log 2>&1 &")
    deadline, received = time.monotonic() + 60, 0
    while received < blob.size // 4 and time.monotonic() < deadline:
        time.sleep(0.2)
        received = int(testbed.ssh(puller, f"stat -c %s {partial} 2>/dev/null || echo 0"))
    testbed.ssh(puller, "pkill -KILL -f 'onhost.pyz pull .*tiny-big'")
    time.sleep(0.5)
    kept = int(testbed.ssh(puller, f"stat -c %s {partial}"))
    assert blob.size // 4 <= kept < blob.size, "the transfer was cut midway"

    resumed = testbed.ssh(puller, f"{command} --json")

    report = json.loads(resumed)
    assert report["ok"] and report["changed"]
    lost = blob.size - kept
    assert lost <= report["downloaded_bytes"] <= lost + DEFAULT_CHUNK_SIZE, report
    assert report["reused_bytes"] >= kept
    directory = model_directory(model.name, str(model.digest))
    assert remote_sha256(testbed, puller, f"{directory}/{blob.path}") == blob.sha256


@pytest.fixture
def registries_stopped(testbed, hosts):
    stopped: list = []

    def stop(host) -> None:
        testbed.ssh(host, "systemctl stop docker-registry")
        stopped.append(host)

    yield stop
    for host in stopped:
        testbed.ssh(host, "systemctl start docker-registry")


def test_pulls_fail_over_to_the_dr_registry_then_fail_clearly_when_both_are_down(
    tmp_path, testbed, hosts, catalog, mirrored, registries_stopped
):
    puller = hosts[1]
    active = find("tiny-gguf", catalog)
    active_dir = model_directory(active.name, str(active.digest))
    testbed.ssh(puller, f"rm -rf '{active_dir}' {STORE}/sha256/{active.files[0].sha256}")
    registries_stopped(hosts[0])

    failover = converge.run(
        inventory_for(tmp_path, testbed, hosts, [puller], model_name=active.name), "deploy/model.py"
    )

    assert failover.returncode == 0, failover.stderr[-3000:]
    path = f"{active_dir}/{active.files[0].path}"
    assert remote_sha256(testbed, puller, path) == active.files[0].sha256

    registries_stopped(hosts[1])
    other = find("tiny-other", catalog)
    down = converge.run(
        inventory_for(tmp_path, testbed, hosts, [puller], model_name=other.name), "deploy/model.py"
    )

    assert down.returncode != 0
    for registry in mirrored:
        assert f"https://{registry}" in down.stderr, "each unreachable registry is named"
    assert remote_sha256(testbed, puller, path) == active.files[0].sha256
    other_dir = model_directory(other.name, str(other.digest))
    assert testbed.ssh(puller, f"ls -d '{other_dir}'", check=False) == ""


def test_wrong_registry_credentials_are_a_clear_error(tmp_path, testbed, hosts, catalog, mirrored):
    secrets = tmp_path / "secrets"
    shutil.copytree(testbed.root / "secrets", secrets)
    registry_json = secrets / "registry.json"
    values = json.loads(registry_json.read_text())
    registry_json.write_text(json.dumps({**values, "password": "not-the-password"}))
    other = find("tiny-other", catalog)
    puller = hosts[0]
    wrong = inventory_for(
        tmp_path, testbed, hosts, [puller], model_name=other.name, secrets_dir=str(secrets)
    )

    result = converge.run(wrong, "deploy/model.py")

    assert result.returncode != 0
    assert "HTTP 401" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
    restored = converge.run(
        inventory_for(tmp_path, testbed, hosts, [puller], model_name=other.name), "deploy/model.py"
    )
    assert restored.returncode == 0, restored.stderr[-3000:]


def test_an_unknown_digest_is_a_clear_error(tmp_path, testbed, hosts, catalog, mirrored):
    ghost = catalog / "tiny-ghost.toml"
    text = (catalog / "tiny-other.toml").read_text().replace("tiny-other", "tiny-ghost")
    ghost.write_text(text.replace(str(find("tiny-other", catalog).digest), "sha256:" + "e" * 64))
    try:
        result = converge.run(
            inventory_for(tmp_path, testbed, hosts, hosts[:1], model_name="tiny-ghost"),
            "deploy/model.py",
        )
    finally:
        ghost.unlink()
    assert result.returncode != 0
    assert "unknown digest" in result.stderr and "sha256:" + "e" * 64 in result.stderr


def test_mirror_refuses_files_that_differ_from_their_pins(tmp_path, catalog, mirrored):
    bad = tmp_path / "catalog"
    bad.mkdir()
    original = (catalog / "tiny-gguf.toml").read_text()
    pinned = find("tiny-gguf", catalog).files[0]
    cases = {
        "files[0].sha256": original.replace(pinned.sha256, "0" * 64),
        "files[0].size": original.replace(f"size = {pinned.size}", f"size = {pinned.size + 1}"),
    }
    for key, text in cases.items():
        (bad / "tiny-gguf.toml").write_text(text)
        result = cli(
            "models",
            "--catalog",
            str(bad),
            "mirror",
            "tiny-gguf",
            "--inventory",
            "inventories/testbed.py",
        )
        assert result.returncode == 2, result.stderr
        assert f"key `{key}`" in result.stderr and "Fix: " in result.stderr


def test_mirror_refuses_a_revision_the_hub_does_not_have(tmp_path, catalog, mirrored):
    bad = tmp_path / "catalog"
    bad.mkdir()
    text = (catalog / "tiny-st.toml").read_text().replace(HF_REVISION, "1" * 40)
    (bad / "tiny-st.toml").write_text(text)
    with FakeHub({HF_REPO: (HF_REVISION, catalog.parent / "hub" / "tiny-st")}) as hub:
        result = cli(
            "models",
            "--catalog",
            str(bad),
            "mirror",
            "tiny-st",
            "--inventory",
            "inventories/testbed.py",
            "--hf-endpoint",
            hub.url,
        )
    assert result.returncode == 2
    assert "key `source.revision`" in result.stderr
