"""Package locks: taken from a host's packages, refused when malformed, pinned by the base role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.cli import main
from llmhost.errors import ConfigError
from llmhost.packagelock import APT_PINS_FILE, apt_preferences, lock_document, read_lock
from roles.base import base
from tests.unit.pyinfra_plan import per_argument, plan

HOST = {"region": "gb-lon1", "hardware": "cpu"}
PACKAGES = {"nginx": "1.22.1-9+deb12u2", "libc6": "2.36-9+deb12u10", "tzdata": "2025b-0+deb12u2"}


def lock_file(tmp_path: Path, document: object) -> str:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_a_lock_is_taken_from_the_fingerprints_packages_without_architectures():
    installed = {"libc6:amd64": "2.36-9+deb12u10", "nginx": "1.22.1-9+deb12u2"}
    document = lock_document("tb2", installed)
    assert document == {
        "format": 1,
        "taken_from": "tb2",
        "packages": {"libc6": "2.36-9+deb12u10", "nginx": "1.22.1-9+deb12u2"},
    }


def test_one_package_at_two_versions_for_two_architectures_cannot_be_locked():
    with pytest.raises(ConfigError, match="libc6 at two versions"):
        lock_document("tb2", {"libc6:amd64": "2.36-9", "libc6:i386": "2.36-8"})


def test_a_written_lock_reads_back(tmp_path):
    path = lock_file(tmp_path, lock_document("tb2", PACKAGES))
    assert read_lock(path) == PACKAGES


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not json", "is not a JSON package lock"),
        ({"format": 2, "packages": PACKAGES}, "is not a package lock of format 1"),
        ({"format": 1, "packages": {}}, "has no `packages` mapping"),
        ({"format": 1, "packages": {"Nginx": "1.0"}}, "'Nginx' is not a Debian package name"),
        ({"format": 1, "packages": {"nginx": "latest"}}, "the version of nginx ('latest')"),
        ({"format": 1, "packages": {"nginx": 1}}, "the version of nginx (1)"),
    ],
)
def test_a_malformed_lock_is_refused_with_the_file_and_the_entry(tmp_path, document, problem):
    path = tmp_path / "packages.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(ConfigError) as raised:
        read_lock(str(path), "s1")
    assert raised.value.key == "base_package_lock" and raised.value.host == "s1"
    assert str(path) in raised.value.problem and problem in raised.value.problem


def test_a_missing_lock_says_where_paths_start(tmp_path):
    with pytest.raises(ConfigError, match="repository root") as raised:
        read_lock("inventories/locks/none.json")
    assert "llmhost lock-packages" in raised.value.fix


def test_preferences_pin_every_package_above_1000_in_name_order():
    text = apt_preferences(PACKAGES, "inventories/locks/packages-prod.json")
    stanzas = text.split("\n\n")[1:]
    assert [s.splitlines()[0] for s in stanzas] == [
        "Package: libc6",
        "Package: nginx",
        "Package: tzdata",
    ]
    assert "Package: nginx\nPin: version 1.22.1-9+deb12u2\nPin-Priority: 1000\n" in text
    assert text.startswith("# Managed by llmhost from inventories/locks/packages-prod.json")


def test_the_base_role_pins_the_lock_before_it_installs_anything(tmp_path):
    path = lock_file(tmp_path, lock_document("tb2", PACKAGES))
    planned = plan(base, {**HOST, "base_package_lock": path})
    names = list(planned)
    pins = f"APT: 3 packages pinned by {path}"
    assert names.index(pins) < names.index("Install base packages (time sync, firewall, CA store)")
    assert any(APT_PINS_FILE in command for command in planned[pins])


def test_without_a_lock_the_pins_file_goes(tmp_path):
    existing = {"File": per_argument({f"path={APT_PINS_FILE}": {"mode": 644}})}
    planned = plan(base, HOST, existing)
    assert planned["APT: no package lock"] == [f"rm -f {APT_PINS_FILE}"]


def test_a_bad_lock_fails_the_check_offline_naming_the_key(tmp_path):
    path = lock_file(tmp_path, {"format": 1, "packages": {"nginx": "newest"}})
    with pytest.raises(ConfigError, match="host host1: key `base_package_lock`"):
        plan(base, {**HOST, "base_package_lock": path})


def test_lock_packages_help_says_what_to_do_with_the_lock():
    result = CliRunner().invoke(main, ["lock-packages", "--help"])
    assert result.exit_code == 0
    assert "base_package_lock" in result.output and "snapshot mirror" in result.output
