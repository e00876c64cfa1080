"""The rebuild's offline half: the host's own values, its pins, and what it needs from outside.

Inventories are written here and loaded with pyinfra's own loader (no host is contacted);
the converge and the fingerprint comparison are proven on real hosts in
tests/e2e/test_fleet.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.catalog import ModelFile
from llmhost.cli import main
from llmhost.errors import ConfigError
from llmhost.inventory import load_inventory
from llmhost.rebuild import (
    fingerprint_arguments,
    host_pins,
    identity,
    needs_outside,
    parse_fingerprint,
)
from roles._common.site import audit_site
from tests.unit.test_residency_audit import world, write  # noqa: F401  (the fixture)

REGISTRY = ("r1", {"region": "gb", "hardware": "cpu", "ssh_hostname": "10.0.0.5"})
DECLARED = {"10.0.9.1": "gb", "mirror.internal": "gb", "proxy.internal": "gb", ".debian.org": "gb"}


def serving(**data: object) -> tuple[str, dict[str, object]]:
    return (
        "s1",
        {
            "region": "gb",
            "hardware": "cpu",
            "ssh_hostname": "10.0.0.6",
            "model_name": "tiny",
            "residency_endpoints": DECLARED,
            "base_ntp_servers": ["10.0.9.1"],
            **data,
        },
    )


def inventory(tmp_path: Path, **data: object) -> Path:
    secrets = {"secrets_dir": str(tmp_path / "secrets")}
    hosts = [(REGISTRY[0], {**REGISTRY[1], **secrets}), serving(**secrets, **data)]
    text = f"all_hosts = {hosts!r}\nregistry = all_hosts[:1]\nmonitoring = all_hosts[:1]\n"
    return write(tmp_path, text)


def outside(tmp_path: Path, **data: object) -> list[str]:
    loaded = load_inventory(str(inventory(tmp_path, **data)), ("s1",))
    endpoints = audit_site(loaded.inventory, loaded.state, ["s1"]).endpoints
    return needs_outside(endpoints, loaded.inventory.get_host("s1").data)


def test_a_host_with_mirrors_and_the_inventorys_registry_needs_nothing_from_outside(tmp_path):
    assert (
        outside(
            tmp_path,
            base_apt_mirror="http://mirror.internal/debian",
            base_apt_security_mirror="http://mirror.internal/debian-security",
        )
        == []
    )


def test_the_egress_proxy_and_what_goes_through_it_are_listed(tmp_path):
    proxy = {"base_http_proxy": "http://proxy.internal:3128"}
    # Two inventories in two places: pyinfra caches a file's compiled code by its path.
    through = outside(tmp_path / "through", **proxy)
    assert any("10.0.0.5" in line and "through" in line for line in through), through
    found = outside(tmp_path / "bypassed", **proxy, base_no_proxy=["10.0.0.5"])
    assert any(line.startswith("egress-proxy http://proxy.internal:3128") for line in found)
    assert any(
        line.startswith("package-mirror http://deb.debian.org/debian through") for line in found
    ), found
    assert not any("10.0.0.5" in line for line in found), "the registry, bypassing the proxy"


def test_the_distributions_own_archive_without_a_proxy_is_outside(tmp_path):
    found = outside(tmp_path)
    assert any("deb.debian.org" in line and "`base_apt_mirror`" in line for line in found), found


def package_lock(tmp_path: Path, packages: dict[str, str]) -> str:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps({"format": 1, "taken_from": "s2", "packages": packages}))
    return str(path)


def test_pins_name_the_release_the_model_digest_the_engine_build_and_the_lock(tmp_path):
    lock = package_lock(tmp_path, {"nginx": "1.22.1-9+deb12u2", "libc6": "2.36-9+deb12u10"})
    loaded = load_inventory(str(inventory(tmp_path, base_package_lock=lock)), ("s1",))
    pinned = host_pins(loaded, "s1")
    assert pinned["model"] == "tiny@sha256:" + pinned["model"].split("@sha256:")[1]
    assert pinned["engine"] == "llama.cpp, the build for class cpu: sha256:" + "e" * 64
    assert len(pinned["release"]) == 12
    assert pinned["packages"] == f"2 Debian packages at the versions in {lock}"
    assert host_pins(loaded, "r1", unpinned_packages=True) == {
        "release": "none: the host serves no model (model_name is unset)",
        "packages": "not pinned (--unpinned-packages): the newest versions the APT sources hold",
    }


def test_a_rebuild_without_a_package_lock_is_refused_with_the_key_and_the_fix(tmp_path):
    loaded = load_inventory(str(inventory(tmp_path)), ("s1",))
    with pytest.raises(ConfigError) as raised:
        host_pins(loaded, "s1")
    assert raised.value.key == "base_package_lock" and raised.value.host == "s1"
    assert "llmhost lock-packages" in str(raised.value.fix)
    assert "--unpinned-packages" in str(raised.value.fix)


def test_the_host_values_are_its_name_its_address_and_rebuild_host_values(tmp_path):
    loaded = load_inventory(str(inventory(tmp_path, rebuild_host_values={"rack": "10.0.9.1"})))
    data = loaded.inventory.get_host("s1").data
    values = identity("s1", data)
    assert values == {"host": "s1", "address": "10.0.0.6", "rack": "10.0.9.1"}
    assert fingerprint_arguments(values) == [
        "--identity", "host=s1", "--identity", "address=10.0.0.6", "--identity", "rack=10.0.9.1",
    ]  # fmt: skip


@pytest.mark.parametrize("values", [{"host": "x"}, {"rack": ""}, {"rack": 3}])
def test_a_bad_rebuild_host_value_is_refused_with_the_key(tmp_path, values):
    loaded = load_inventory(str(inventory(tmp_path, rebuild_host_values=values)))
    with pytest.raises(ConfigError) as raised:
        identity("s1", loaded.inventory.get_host("s1").data)
    assert raised.value.key == "rebuild_host_values"


def test_a_misspelt_rebuild_key_is_refused_offline(tmp_path):
    path = inventory(tmp_path, rebuild_host_value={"rack": "10.0.9.1"})
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    assert "rebuild_host_values" in result.output


def test_a_tool_that_failed_or_answered_nonsense_is_an_error_that_says_so():
    assert "converge it first" in parse_fingerprint("s1", False, "", "No such file")["error"]
    assert "not JSON" in parse_fingerprint("s1", True, "Traceback", "")["error"]
    assert parse_fingerprint("s1", True, '{"format": 1}', "") == {"format": 1}


def test_rebuild_refuses_a_host_as_its_own_twin_before_contacting_anything(tmp_path):
    path = inventory(tmp_path)
    result = CliRunner().invoke(main, ["rebuild", str(path), "s1", "--twin", "s1"])
    assert result.exit_code == 2
    assert "--twin must be another host" in result.output


def test_a_vllm_host_needs_pypi_from_outside_until_the_wheels_are_in_the_registry(
    tmp_path, monkeypatch
):
    from llmhost.runtimes import VllmWheels, load_sources, record_vllm_wheels, sha256_file

    mirrors = {
        "base_apt_mirror": "http://mirror.internal/debian",
        "base_apt_security_mirror": "http://mirror.internal/debian-security",
        "nvidia_apt_mirror": "http://mirror.internal/nvidia",
        "hardware": "l40s",
        "model_name": "hubbed",
        "nvidia_driver_version": "550.127.08",
    }
    wheels_file = tmp_path / "vllm-wheels.toml"
    monkeypatch.setenv("LLMHOST_VLLM_WHEELS", str(wheels_file))
    before = outside(tmp_path / "index", **mirrors)
    assert any(line.startswith("runtime-source https://pypi.org/simple") for line in before)
    pin = load_sources().vllm
    files = (ModelFile("vllm-1-py3-none-any.whl", 1, "a" * 64),)
    record_vllm_wheels(VllmWheels(pin.version, sha256_file(pin.lock), "sha256:" + "c" * 64, files))
    assert outside(tmp_path / "registry", **mirrors) == [], "the wheels come from r1"
