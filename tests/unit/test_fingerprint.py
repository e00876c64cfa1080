"""The host-side fingerprint: two twins print the same, and every real difference shows.

Real directories and files here stand in for two hosts' managed roots; the shipped
archive runs isolated (``python3 -I -S``, as hosts run it) against them, with a
``dpkg-query`` of our own on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.onhost import app
from llmhost.onhost.fingerprint import differences, fingerprint, installed_packages, main
from roles._common.onhost import build_app

DPKG = "nginx\t1.22.1-9\tii \nchrony\t4.3-2\tii \nold-lib\t1.0\trc \nheld\t2.0\thi \n"
RELEASE = {
    "id": "b171126b646d",
    "engine": "llama.cpp",
    "executable": "/opt/llmhost/llama.cpp/sha256-e/llama-server",
    "model": "tiny",
    "model_digest": "sha256:" + "a" * 64,
    "served_model_name": "tiny",
}


def host_tree(root: Path, name: str, address: str) -> Path:
    """A host's managed files, naming the host and its address as real configs do."""
    etc = root / name / "etc" / "llmhost"
    (etc / "firewall.d").mkdir(parents=True)
    (etc / "egress.env").write_text(f"NO_PROXY=localhost,{address},{name}\n")
    (etc / "firewall.d" / "ssh.nft").write_text("tcp dport 22 ip saddr 10.0.0.1 accept\n")
    (etc / "tls").mkdir()
    (etc / "tls" / "host.key").write_text(f"secret of {name}\n")
    os.symlink(f"/etc/llmhost/{name}.conf", etc / "current")
    return etc


def state(colour: str = "blue", release: dict | None = None) -> dict:
    return {"active": colour, "colours": {colour: release or RELEASE}, "history": []}


def printed(etc: Path, name: str, address: str, **overrides) -> dict:
    arguments = {
        "roots": [str(etc)],
        "excluded": ["*.key"],
        "identity": {"host": name, "address": address},
        "dpkg_output": DPKG,
        "state": state(),
        "digest": lambda path: "f" * 64,
    }
    found = fingerprint(**{**arguments, **overrides})
    # the two trees lie in directories named after the hosts (replaced like any name), as
    # two hosts' roots do not: compare below them
    prefix = f"{etc.parent.parent.parent}/{{host}}"
    found["files"] = {p.replace(prefix, ""): e for p, e in found["files"].items()}
    found["excluded"] = [p.replace(prefix, "") for p in found["excluded"]]
    return found


@pytest.fixture
def twins(tmp_path):
    one = host_tree(tmp_path, "web1", "10.0.0.6")
    two = host_tree(tmp_path, "web2", "10.0.0.7")
    return (one, "web1", "10.0.0.6"), (two, "web2", "10.0.0.7")


def test_twins_that_differ_only_in_name_and_address_print_the_same(twins):
    one, two = twins
    first, second = printed(*one), printed(*two)
    assert differences(first, second) == []
    assert first == second
    entry = first["files"]["/etc/llmhost/egress.env"]
    assert set(entry) == {"sha256", "mode", "owner", "group"} and entry["mode"] == "0644"
    assert first["files"]["/etc/llmhost/current"] == {"link": "/etc/llmhost/{host}.conf"}
    assert first["files"]["/etc/llmhost"]["directory"] is True


def test_a_changed_byte_a_mode_a_missing_file_and_a_link_each_show(twins):
    one, two = twins
    etc = two[0]
    (etc / "firewall.d" / "ssh.nft").write_text("tcp dport 22 accept\n")
    (etc / "egress.env").chmod(0o600)
    (etc / "firewall.d" / "extra.nft").write_text("\n")
    os.unlink(etc / "current")
    os.symlink("/elsewhere", etc / "current")
    found = differences(printed(*one), printed(*two))
    assert found == [
        "file /etc/llmhost/current: link /etc/llmhost/{host}.conf here, /elsewhere on the twin",
        "file /etc/llmhost/egress.env: mode 0644 here, 0600 on the twin",
        "file /etc/llmhost/firewall.d/extra.nft: on the twin only",
        found[3],
    ]
    assert found[3].startswith("file /etc/llmhost/firewall.d/ssh.nft: sha256 ")


def test_private_keys_are_listed_and_never_hashed(twins):
    one, _ = twins
    found = printed(*one)
    assert found["excluded"] == ["/etc/llmhost/tls/host.key"]
    assert "/etc/llmhost/tls/host.key" not in found["files"]
    assert "secret" not in json.dumps(found)


def test_packages_are_the_installed_and_held_ones_and_a_version_difference_shows(twins):
    one, two = twins
    assert installed_packages(DPKG) == {"nginx": "1.22.1-9", "chrony": "4.3-2", "held": "2.0"}
    newer = DPKG.replace("1.22.1-9", "1.22.1-10")
    assert differences(printed(*one), printed(*two, dpkg_output=newer)) == [
        "package nginx: 1.22.1-9 here, 1.22.1-10 on the twin"
    ]
    fewer = "nginx\t1.22.1-9\tii \n"
    assert "package chrony: 4.3-2 here, absent on the twin" in differences(
        printed(*one), printed(*two, dpkg_output=fewer)
    )


def test_the_served_release_counts_and_the_colour_it_is_on_and_when_do_not(twins):
    one, two = twins
    green = printed(*two, state=state("green"))
    assert differences(printed(*one), green) == [], "same release, other colour: same state"
    timed = {**RELEASE, "since": "2026-12-02T23:48:48Z",
             "gate": {"passed": True, "time": "2026-12-02T23:48:48Z"}}  # fmt: skip
    later = {**timed, "since": "2026-12-03T01:00:00Z",
             "gate": {"passed": True, "time": "2026-12-03T01:00:00Z"}}  # fmt: skip
    assert differences(printed(*one, state=state(release=timed)),
                       printed(*two, state=state(release=later))) == []  # fmt: skip
    failed = {**timed, "gate": {"passed": False}}
    assert differences(printed(*one, state=state(release=timed)),
                       printed(*two, state=state(release=failed))) == [
        "serving release gate_passed: True here, False on the twin"
    ]  # fmt: skip
    other = {**RELEASE, "model_digest": "sha256:" + "b" * 64}
    assert differences(printed(*one), printed(*two, state=state(release=other))) == [
        f"serving release model_digest: {RELEASE['model_digest']} here, "
        f"{other['model_digest']} on the twin"
    ]
    rebuilt = printed(*two, digest=lambda path: "0" * 64)
    assert differences(printed(*one), rebuilt) == [
        f"serving engine binary: sha256 {'f' * 64} here, {'0' * 64} on the twin"
    ]
    idle = printed(*two, state={"active": None, "colours": {}, "history": []})
    assert idle["serving"] is None
    assert differences(printed(*one), idle) == [
        f"serving: release {RELEASE['id']} here, nothing on the twin"
    ]


def test_a_malformed_identity_cannot_run(capsys):
    assert main(["--identity", "host"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_the_shipped_tool_prints_the_fingerprint_isolated(tmp_path, twins):
    """As hosts run it: the archive, no site-packages, dpkg-query from PATH."""
    (etc, name, address), _ = twins
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dpkg-query"
    (tmp_path / "dpkg.txt").write_text(DPKG)
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'dpkg.txt'}\n")
    fake.chmod(0o755)
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"engine")
    (tmp_path / "state.json").write_text(
        json.dumps(state(release={**RELEASE, "executable": str(binary)}))
    )
    archive = tmp_path / "onhost.pyz"
    archive.write_bytes(build_app())
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(archive), "fingerprint",
         "--identity", f"host={name}", "--identity", f"address={address}",
         "--root", str(etc), "--exclude", "*.key", "--state", str(tmp_path / "state.json")],
        capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["packages"]["nginx"] == "1.22.1-9"
    assert found["serving"]["executable_sha256"] == hashlib.sha256(b"engine").hexdigest()
    assert f"{tmp_path}/{{host}}/etc/llmhost/egress.env" in found["files"]
    assert address not in done.stdout and f"/{name}/" not in done.stdout


def test_the_tool_is_in_the_archive():
    assert app.TOOLS["fingerprint"] == "llmhost.onhost.fingerprint"
