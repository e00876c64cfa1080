"""The residency audit: every endpoint the stack calls, located, and refused outside the policy.

Each case writes an inventory (and group data) here and runs the real `llmhost residency
audit` (in this process, or as `python -m llmhost.cli` for the exit codes); `llmhost
check` must refuse what the audit fails, with host, key and fix. No host is contacted
and no name is resolved: the hosts' names do not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmhost import endpoints
from llmhost.catalog import ModelFile
from llmhost.cli import main
from llmhost.paths import REPO_ROOT
from llmhost.runtimes import LlamaCppBuild, record_build
from llmhost.secrets import add_api_key
from tests.unit.test_model_role import DIGEST, model_file

HF_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_model_file(name: str) -> str:
    local = f'kind = "local"\npath = "/srv/weights/{name}"\n'
    hub = f'kind = "huggingface"\nrepo = "acme/{name}"\nrevision = "{HF_REVISION}"\n'
    return model_file(name, digest=DIGEST).replace(local, hub)


@pytest.fixture(autouse=True)
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A catalog (a local model and a hub model, both mirrored), a cpu build, an API key."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.toml").write_text(model_file("tiny", digest=DIGEST))
    (models / "hubbed.toml").write_text(hub_model_file("hubbed"))
    builds = tmp_path / "builds.toml"
    files = (ModelFile("llama-server", 1, "1" * 64), ModelFile("llama-bench", 1, "2" * 64))
    record_build(LlamaCppBuild("cpu", "sha256:" + "e" * 64, files), builds)
    add_api_key(tmp_path / "secrets", "team-a")
    env = {
        "LLMHOST_MODELS_DIR": str(models),
        "LLMHOST_RUNTIME_BUILDS": str(builds),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return env


def write(tmp_path: Path, inventory: str, **group_data: str) -> Path:
    directory = tmp_path / "inventory"
    (directory / "group_data").mkdir(parents=True, exist_ok=True)
    for group, text in group_data.items():
        (directory / "group_data" / f"{group}.py").write_text(text)
    path = directory / "prod.py"
    path.write_text(inventory.replace("SECRETS", repr(str(tmp_path / "secrets"))))
    return path


def host_entry(declared: str) -> str:
    """An inventory of one host, w1, that declares ``declared`` (Python source)."""
    data = f'{{"region": "gb", "hardware": "cpu", "residency_endpoints": {declared}}}'
    return f'web = [("w1", {data})]\n'


def audit(tmp_path: Path, inventory: str, **group_data: str) -> tuple[int, dict[str, Any]]:
    path = write(tmp_path, inventory, **group_data)
    result = CliRunner().invoke(main, ["residency", "audit", str(path), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def rows(report: dict[str, Any], host: str | None = None, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in report["endpoints"]
        if (host is None or e["host"] == host) and all(e.get(k) == v for k, v in match.items())
    ]


# A fleet with every kind of endpoint: a proxy, mirrors (of Debian, NVIDIA's and Grafana's
# repositories), NTP, two registries (one outside the inventory), a monitoring host with a
# webhook and Grafana, a llama.cpp host serving a hub model and a vLLM host of a GPU class.
MIRRORS = """\
    "nvidia_apt_mirror": "http://apt.corp.example/cuda/",
    "monitoring_grafana_apt_mirror": "http://apt.corp.example/grafana",
"""
FLEET = f"""
_common = {{
    "secrets_dir": SECRETS,
    "base_http_proxy": "http://egress.corp.example:3128",
    "base_no_proxy": ["localhost", ".corp.example"],
    "base_apt_mirror": "http://apt.corp.example/debian",
    "base_apt_security_mirror": "http://apt.corp.example/debian-security",
    "base_ntp_servers": ["ntp1.corp.example", "192.0.2.123"],
{MIRRORS}}}
serving = [
    ("gpu-1", {{**_common, "region": "gb-lon1", "hardware": "cpu", "model_name": "hubbed",
               "model_registries": ["registry-1:5000", "dr.corp.example:5000"]}}),
    ("gpu-2", {{**_common, "region": "de-fra", "hardware": "l40s", "model_name": "tiny",
               "nvidia_driver_version": "550.127.08", "model_registries": ["registry-1:5000"]}}),
]
registry = [("registry-1", {{**_common, "region": "gb-lon1", "hardware": "cpu"}})]
monitoring = [
    ("ops-1", {{**_common, "region": "nl-ams", "hardware": "cpu", "ssh_hostname": "10.9.0.7",
               "monitoring_alert_webhook": "https://hooks.corp.example/alert/T0KEN?x=1"}}),
]
"""
# The same fleet on the vendors' own repositories: NVIDIA's and Grafana's.
VENDORS = FLEET.replace(MIRRORS, "")
DECLARED = """residency_endpoints = {
    ".corp.example": "gb-lon1",
    "192.0.2.0/24": "gb-man",
    "huggingface.co": "ie",
    "files.pythonhosted.org": "ie",
    "pypi.org": "ie",
}
"""


def test_every_kind_of_endpoint_is_listed_with_its_region_and_where_that_comes_from(tmp_path):
    code, report = audit(tmp_path, FLEET, all=DECLARED)

    assert code == 0 and report["ok"] is True and report["failures"] == [], report["failures"]
    kinds = {e["kind"] for e in report["endpoints"]}
    assert kinds == {
        endpoints.EGRESS_PROXY,
        endpoints.PACKAGE_MIRROR,
        endpoints.NTP,
        endpoints.REGISTRY,
        endpoints.MODEL_SOURCE,
        endpoints.RUNTIME_SOURCE,
        endpoints.ALERT_WEBHOOK,
        endpoints.MONITORING,
        endpoints.GRAFANA_REPOSITORY,
        endpoints.NVIDIA_REPOSITORY,
    }
    (proxy,) = rows(report, "gpu-1", kind="egress-proxy")
    assert proxy["endpoint"] == "http://egress.corp.example:3128" and proxy["region"] == "gb-lon1"
    assert proxy["region_from"] == "residency_endpoints['.corp.example']"
    mirrors = rows(report, "gpu-1", kind="package-mirror")
    assert [m["key"] for m in mirrors] == ["base_apt_mirror", "base_apt_security_mirror"]
    proxied = "http://egress.corp.example:3128"
    assert all(m["via"] == proxied for m in mirrors), "APT only bypasses plain host names"
    assert [(n["endpoint"], n["region"]) for n in rows(report, "gpu-1", kind="ntp")] == [
        ("ntp1.corp.example", "gb-lon1"),
        ("192.0.2.123", "gb-man"),  # an address in a declared network
    ]
    primary, fallback = rows(report, "gpu-1", kind="registry")
    assert primary["endpoint"] == "registry-1:5000" and "primary" in primary["note"]
    assert fallback["endpoint"] == "dr.corp.example:5000" and "fallback" in fallback["note"]
    assert fallback["via"] is None, "the puller bypasses the proxy for `.corp.example`"
    assert primary["via"] == proxied
    (hub,) = rows(report, "gpu-1", kind="model-source")
    assert hub["side"] == "control" and hub["endpoint"] == "https://huggingface.co"
    assert "models mirror hubbed" in hub["note"] and hub["region"] == "ie"
    (source,) = rows(report, "gpu-1", kind="runtime-source")
    assert source["side"] == "control" and source["key"] == "llama_cpp.source_url"
    vllm = rows(report, "gpu-2", kind="runtime-source", side="host")
    assert [v["endpoint"] for v in vllm] == [
        "https://pypi.org/simple",
        "https://files.pythonhosted.org",
    ]
    assert all(v["via"] == "http://egress.corp.example:3128" for v in vllm)
    assert rows(report, "gpu-2", kind="model-source") == [], "a local model has no hub"
    (webhook,) = rows(report, "ops-1", kind="alert-webhook")
    assert webhook["endpoint"] == "https://hooks.corp.example/...", "the token is never shown"
    scraped = {e["endpoint"]: e["region_from"] for e in rows(report, "ops-1", kind="monitoring")}
    assert scraped["gpu-2:9100"] == "inventory host gpu-2"
    watched = rows(report, "gpu-1", kind="monitoring")
    assert [w["endpoint"] for w in watched] == ["http://10.9.0.7:9090"]
    assert watched[0]["region"] == "nl-ams", "ops-1's address takes ops-1's region"


def test_an_inventory_hosts_name_or_address_takes_that_hosts_region(tmp_path):
    _, report = audit(tmp_path, FLEET, all=DECLARED)
    (registry,) = rows(report, "gpu-2", kind="registry")
    assert (
        registry["region"] == "gb-lon1" and registry["region_from"] == "inventory host registry-1"
    )
    by_address = rows(report, "ops-1", kind="monitoring", endpoint="10.9.0.7:9100")
    assert by_address[0]["region"] == "nl-ams"
    assert by_address[0]["region_from"] == "inventory host ops-1"


def test_loopback_is_the_calling_host_itself(tmp_path):
    inventory = (
        'web = [("w1", {"region": "ie-dub", "hardware": "cpu", '
        '"base_ntp_servers": ["127.0.0.1", "localhost"], '
        '"residency_endpoints": {"deb.debian.org": "ie", "security.debian.org": "ie"}})]\n'
    )
    code, report = audit(tmp_path, inventory)
    assert code == 0, report["failures"]
    assert {(n["region"], n["region_from"]) for n in rows(report, kind="ntp")} == {
        ("ie-dub", "loopback: the host itself")
    }


def test_an_undeclared_endpoint_fails_naming_host_key_and_fix(tmp_path):
    undeclared = DECLARED.replace('    "huggingface.co": "ie",\n', "")
    code, report = audit(tmp_path, FLEET, all=undeclared)

    assert code == 1 and report["ok"] is False
    (failure,) = report["failures"]
    assert failure == {
        "host": "gpu-1",
        "side": "control",
        "kind": "model-source",
        "endpoint": "https://huggingface.co",
        "key": "model_name",
        "problem": failure["problem"],
        "fix": failure["fix"],
    }
    assert "has no declared region" in failure["problem"]
    assert "residency_endpoints = {'huggingface.co': " in failure["fix"]
    (row,) = rows(report, "gpu-1", kind="model-source")
    assert row["ok"] is False and row["region"] is None


def test_the_distributions_own_archive_is_listed_when_no_mirror_replaces_it(tmp_path):
    code, report = audit(tmp_path, 'web = [("w1", {"region": "gb", "hardware": "cpu"})]\n')
    assert code == 1
    assert [f["endpoint"] for f in report["failures"]] == [
        "http://deb.debian.org/debian",
        "http://security.debian.org/debian-security",
    ]
    assert all(f["key"] == "base_apt_mirror" for f in report["failures"])
    ntp = rows(report, kind="ntp")
    assert ntp and all(n["region"] == "gb" for n in ntp), "llmhost declares its UK pool default"


def test_an_endpoint_outside_the_policy_fails(tmp_path):
    outside = DECLARED.replace('"pypi.org": "ie"', '"pypi.org": "us-east"')
    code, report = audit(tmp_path, FLEET, all=outside)
    assert code == 1
    failed = {(f["host"], f["side"], f["endpoint"]) for f in report["failures"]}
    assert failed == {
        ("gpu-2", "host", "https://pypi.org/simple"),
        ("gpu-2", "control", "https://pypi.org/simple"),
    }
    problem = report["failures"][0]["problem"]
    assert "is in 'us-east' (residency_endpoints['pypi.org']), outside" in problem


def test_a_narrower_policy_refuses_a_declared_region_it_does_not_allow(tmp_path):
    narrow = DECLARED + 'residency_allowed_regions = ["gb", "de", "nl"]\n'
    code, report = audit(tmp_path, FLEET, all=narrow)
    assert code == 1
    assert {f["endpoint"] for f in report["failures"]} >= {"https://huggingface.co"}
    assert all(
        "outside `residency_allowed_regions` (gb, de, nl)" in f["problem"]
        for f in report["failures"]
    )


def test_declarations_from_every_part_of_the_inventory_add_up(tmp_path):
    """pyinfra would keep the host's map and drop its group's: declarations add up instead."""
    inventory = (
        'web = ([("w1", {"region": "gb", "hardware": "cpu", '
        '"residency_endpoints": {"security.debian.org": "gb"}})], '
        '{"base_ntp_servers": ["ntp.corp.example"], '
        '"residency_endpoints": {"ntp.corp.example": "gb"}})\n'
    )
    everyone = 'residency_endpoints = {"deb.debian.org": "gb"}\n'
    code, report = audit(tmp_path, inventory, all=everyone)
    assert code == 0, report["failures"]
    assert {e["region_from"] for e in report["endpoints"]} == {
        "residency_endpoints['deb.debian.org']",
        "residency_endpoints['security.debian.org']",
        "residency_endpoints['ntp.corp.example']",
    }


def test_two_parts_declaring_one_endpoint_in_different_regions_cannot_run(tmp_path):
    inventory = host_entry('{"deb.debian.org": "de"}')
    path = write(tmp_path, inventory, all='residency_endpoints = {"deb.debian.org": "gb"}\n')
    result = CliRunner().invoke(main, ["residency", "audit", str(path)])
    assert result.exit_code == 2
    assert (
        "host w1: key `residency_endpoints`: 'deb.debian.org' is declared in 'de' on the host "
        "itself and in 'gb' for everyone (group_data/all.py)" in result.output
    )


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ('{"deb.debian.org": "GB"}', "which is not a region code"),
        ('{"deb.debian.org": 44}', "expected dict[str, str]"),
        ('{"not a host!": "gb"}', "is not a host, domain, address, network or URL"),
        ('{"10.0.0.0/33": "gb"}', "is not a host, domain, address, network or URL"),
    ],
)
def test_a_malformed_declaration_is_refused_with_the_key(tmp_path, declared, named):
    inventory = host_entry(declared)
    path = write(tmp_path, inventory)
    result = CliRunner().invoke(main, ["residency", "audit", str(path)])
    assert result.exit_code == 2, result.output
    assert "key `residency_endpoints`" in result.output and named in result.output


def test_another_hosts_bad_region_fails_the_audit_but_is_that_hosts_problem_in_check(tmp_path):
    fleet = FLEET.replace('"region": "de-fra"', '"region": "us-east"')
    code, report = audit(tmp_path, fleet, all=DECLARED)
    assert code == 1
    scrape = rows(report, "ops-1", kind="monitoring", endpoint="gpu-2:9100")[0]
    assert scrape["ok"] is False and scrape["region"] == "us-east"
    checked = CliRunner().invoke(main, ["check", str(write(tmp_path, fleet, all=DECLARED))])
    assert "host gpu-2: key `region`: 'us-east' is outside" in checked.output
    assert "host ops-1:" not in checked.output, "reported once, on the host it belongs to"


def test_nvidias_repository_is_called_by_gpu_classes_and_grafanas_by_monitoring_hosts(tmp_path):
    _, report = audit(tmp_path, FLEET, all=DECLARED)
    proxied = "http://egress.corp.example:3128"
    (nvidia,) = rows(report, kind=endpoints.NVIDIA_REPOSITORY)
    assert nvidia["host"] == "gpu-2", "GPU classes only: gpu-1, registry-1 and ops-1 are cpu"
    assert nvidia["endpoint"] == "http://apt.corp.example/cuda", "the mirror replaces NVIDIA's"
    assert nvidia["key"] == "nvidia_apt_mirror" and nvidia["region"] == "gb-lon1"
    assert nvidia["via"] == proxied, "APT bypasses plain host names only, not `.corp.example`"
    (grafana,) = rows(report, kind=endpoints.GRAFANA_REPOSITORY)
    assert grafana["host"] == "ops-1", "`monitoring` hosts only"
    assert grafana["endpoint"] == "http://apt.corp.example/grafana"
    assert grafana["key"] == "monitoring_grafana_apt_mirror" and grafana["region"] == "gb-lon1"
    assert grafana["via"] == proxied

    code, report = audit(tmp_path / "vendors", VENDORS, all=DECLARED)
    assert code == 1
    assert {(f["host"], f["kind"], f["endpoint"], f["key"]) for f in report["failures"]} == {
        (
            "gpu-2",
            endpoints.NVIDIA_REPOSITORY,
            "https://developer.download.nvidia.com/compute/cuda/repos",
            "nvidia_apt_mirror",
        ),
        ("ops-1", endpoints.GRAFANA_REPOSITORY, "https://apt.grafana.com",
         "monitoring_grafana_apt_mirror"),
    }  # fmt: skip
    fixes = {f["kind"]: f["fix"] for f in report["failures"]}
    assert "residency_endpoints = {'developer.download.nvidia.com': " in fixes["nvidia-repository"]
    assert "or point `nvidia_apt_mirror` at" in fixes["nvidia-repository"]
    assert "or point `monitoring_grafana_apt_mirror` at" in fixes["grafana-repository"]
    declared = DECLARED.replace(
        '"pypi.org": "ie",', '"pypi.org": "ie",\n    "developer.download.nvidia.com": "ie",'
    ).replace('"pypi.org": "ie",', '"pypi.org": "ie",\n    "apt.grafana.com": "ie",')
    code, report = audit(tmp_path / "declared", VENDORS, all=declared)
    assert code == 0, report["failures"]

    # Every host of a GPU class gets the driver, serving or not; Grafana turned off calls
    # nothing of Grafana's.
    changed = VENDORS.replace(
        '("registry-1", {**_common, "region": "gb-lon1", "hardware": "cpu"})',
        '("registry-1", {**_common, "region": "gb-lon1", "hardware": "rtx4090", '
        '"nvidia_driver_version": "550.127.08"})',
    ).replace(
        '"ssh_hostname": "10.9.0.7",', '"ssh_hostname": "10.9.0.7", "monitoring_grafana": False,'
    )
    _, report = audit(tmp_path / "changed", changed, all=DECLARED)
    assert rows(report, kind=endpoints.GRAFANA_REPOSITORY) == []
    assert [e["host"] for e in rows(report, kind=endpoints.NVIDIA_REPOSITORY)] == [
        "gpu-2",
        "registry-1",
    ]
    assert {f["kind"] for f in report["failures"]} == {endpoints.NVIDIA_REPOSITORY}


def test_the_json_has_the_validators_shape(tmp_path):
    _, report = audit(tmp_path, FLEET, all=DECLARED)
    assert set(report) == {"ok", "endpoints", "failures"}
    assert set(report["endpoints"][0]) == {
        "host", "side", "kind", "endpoint", "address", "key", "via", "note", "region",
        "region_from", "ok",
    }  # fmt: skip
    assert {e["kind"] for e in report["endpoints"]} <= set(endpoints.KINDS)


def test_a_proxy_password_is_never_printed(tmp_path):
    fleet = FLEET.replace(
        "http://egress.corp.example:3128", "http://u:s3cret@egress.corp.example:3128"
    )
    path = write(tmp_path, fleet, all=DECLARED)
    for args in (["residency", "audit", str(path)], ["residency", "audit", str(path), "--json"]):
        result = CliRunner().invoke(main, args)
        assert "s3cret" not in result.output and "***@egress.corp.example" in result.output


def test_check_refuses_what_the_audit_fails_with_host_key_and_fix(tmp_path):
    undeclared = DECLARED.replace('    "huggingface.co": "ie",\n', "")
    result = CliRunner().invoke(main, ["check", str(write(tmp_path, FLEET, all=undeclared))])
    assert result.exit_code == 1
    assert (
        "error: host gpu-1: key `model_name`: model-source https://huggingface.co "
        "(`llmhost models mirror hubbed` downloads acme/hubbed), called from the control "
        "machine has no declared region. Fix: declare its region" in result.output
    )


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmhost.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
    )


def test_exit_codes_0_pass_1_fail_2_cannot_run(tmp_path, world):
    passing = write(tmp_path / "pass", FLEET, all=DECLARED)
    done = cli("residency", "audit", str(passing), "--json", env=world)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True

    failing = write(tmp_path / "fail", FLEET)
    done = cli("residency", "audit", str(failing), env=world)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "gpu-1 (gb-lon1)"
    assert "FAILED: " in done.stdout and "has no declared region" in done.stdout

    broken = write(tmp_path / "broken", "serving = [\n")
    done = cli("residency", "audit", str(broken), env=world)
    assert done.returncode == 2 and "invalid Python" in done.stderr
    assert cli("residency", "audit", str(tmp_path / "nope.py"), env=world).returncode == 2


def test_the_shipped_inventories_pass_the_audit():
    for inventory in ("inventories/example_uk_eu.py", "inventories/single_box.py"):
        done = cli("residency", "audit", inventory, "--json", env={})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        assert json.loads(done.stdout)["ok"] is True


def fake_testbed(root: Path) -> dict[str, str]:
    """A testbed of two hosts as its state file has them (nothing runs); its environment."""
    state = {
        "hosts": [
            {"name": f"tb{i}", "index": i, "address": f"10.231.{i}.2",
             "gateway": f"10.231.{i}.1", "rootfs": f"/nonexistent/tb{i}",
             "nspawn_pid": 1, "proxy_pid": 1, "ntp_pid": 1}
            for i in (1, 2)
        ]
    }  # fmt: skip
    (root / "testbed.json").write_text(json.dumps(state))
    return {"LLMHOST_TESTBED_DIR": str(root)}


def test_what_the_testbed_writes_passes_the_audit(tmp_path):
    """inventories/testbed.py and the e2e tests' inventories are built from inventory_data."""
    env = fake_testbed(tmp_path)
    done = cli("residency", "audit", "inventories/testbed.py", "--json", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    report = json.loads(done.stdout)
    assert {e["kind"] for e in report["endpoints"]} >= {"egress-proxy", "ntp", "package-mirror"}

    from llmhost.testing.testbed import Testbed

    bed = Testbed(root=tmp_path)
    serving = {"model_name": "hubbed", "hardware": "cpu"}
    entries = [(h.name, {**bed.inventory_data(h), **serving}) for h in bed.hosts()]
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"testbed = {entries!r}\nregistry = testbed[:2]\nmonitoring = testbed[:1]\n"
    )
    done = cli("residency", "audit", str(inventory), "--json", env={**os.environ, **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    kinds = {e["kind"] for e in json.loads(done.stdout)["endpoints"]}
    assert {"registry", "model-source", "runtime-source", "monitoring"} <= kinds


def test_the_e2e_nvidia_and_grafana_inventories_pass_the_audit(tmp_path):
    """What tests/e2e/test_nvidia.py and test_grafana.py converge must get past the audit, to
    the failures they are about (the nvidia preflight, the repository keys)."""
    from llmhost.testing.testbed import Testbed
    from tests.e2e.conftest import write_inventory
    from tests.e2e.test_grafana import MIRROR_PORT
    from tests.e2e.test_nvidia import NO_GPU, gpu_class

    env = {**os.environ, **fake_testbed(tmp_path)}
    bed = Testbed(root=tmp_path)
    tb1, tb2 = bed.hosts()

    def audited(name: str, **edits: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        inventory = write_inventory(tmp_path / f"{name}.py", bed, [tb1, tb2], **edits)
        done = cli("residency", "audit", inventory, "--json", env=env)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    # NVIDIA's repository: the testbed does not declare it (its proxy never forwards there),
    # so a GPU class host fails the audit unless its own data declares it, as test_nvidia's do.
    code, report = audited("undeclared", tb2=NO_GPU)
    assert code == 1
    assert [(f["host"], f["kind"]) for f in report["failures"]] == [
        ("tb2", endpoints.NVIDIA_REPOSITORY)
    ]
    for name, data in (
        ("no-gpu", gpu_class(bed, tb2)),
        ("key", gpu_class(bed, tb2, nvidia_require_gpus=False, nvidia_secure_boot_ok=True)),
    ):
        code, report = audited(name, tb2=data)
        assert code == 0, report["failures"]
        (nvidia,) = rows(report, kind=endpoints.NVIDIA_REPOSITORY)
        assert nvidia["host"] == "tb2"
        assert nvidia["endpoint"] == "https://developer.download.nvidia.com/compute/cuda/repos"

    # Grafana on, from a key server on tb1's loopback: tb1's own region.
    mirror = f"http://localhost:{MIRROR_PORT}"
    code, report = audited(
        "grafana", tb1={"monitoring_grafana": True, "monitoring_grafana_apt_mirror": mirror}
    )
    assert code == 0, report["failures"]
    (grafana,) = rows(report, kind=endpoints.GRAFANA_REPOSITORY)
    assert grafana["host"] == "tb1" and grafana["region_from"] == "loopback: the host itself"
    assert grafana["via"] is None, "`localhost` is in base_no_proxy, which APT honours"
    # Grafana's own repository is not the testbed's to declare: its proxy does not forward
    # there (test_grafana's install test skips for that reason).
    code, report = audited("grafana-vendor", tb1={"monitoring_grafana": True})
    assert code == 1
    assert [f["endpoint"] for f in report["failures"]] == ["https://apt.grafana.com"]


def test_plain_pyinfra_refuses_deploy_site_on_a_failed_audit_before_any_operation(tmp_path):
    """The audit is the first thing deploy/site.py does: no role is planned, no fact read.

    `@local` is the only host pyinfra connects to without SSH; `--dry` on top, though the
    refusal comes before any operation exists.
    """
    inventory = write(tmp_path, 'web = [("@local", {"region": "gb", "hardware": "cpu"})]\n')
    done = subprocess.run(
        [sys.executable, "-m", "pyinfra", str(inventory), "deploy/site.py", "--dry", "-y"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert (
        "host @local: key `base_apt_mirror`: package-mirror http://deb.debian.org/debian" in output
    )
    assert "(and 1 more)" in output and "llmhost residency audit INVENTORY" in output
    assert "Beginning operation run" not in output


EDGE = (
    FLEET
    + """
edge = [("edge-1", {**_common, "region": "gb-lon1", "hardware": "cpu",
         "edge_fallback_clusters": [
             {"name": "fra", "address": "edge-fra.other.example:8443", "region": "de-fra"}],
         "edge_hosted_fallback": {"url": "https://api.hosted.example/v1",
                                  "key_file": "hosted-api-key", "region": "fr-par"}})]
"""
)


def test_each_edge_tier_is_audited_in_the_region_its_setting_states(tmp_path):
    code, report = audit(tmp_path, EDGE, all=DECLARED)
    assert code == 0, report["failures"]
    pool = rows(report, "edge-1", kind="serving-gateway")
    assert {row["endpoint"] for row in pool} == {"gpu-1:8000", "gpu-2:8000"}
    tiers = {row["endpoint"]: row for row in rows(report, "edge-1", kind="fallback")}
    cluster = tiers["edge-fra.other.example:8443"]
    assert (cluster["region"], cluster["region_from"]) == (
        "de-fra",
        "stated by `edge_fallback_clusters[0]`",
    )
    assert tiers["https://api.hosted.example/v1"]["region"] == "fr-par"


def test_a_fallback_tier_outside_the_policy_or_against_its_declaration_fails(tmp_path):
    outside = EDGE.replace('"region": "fr-par"', '"region": "us-east"')
    code, report = audit(tmp_path, outside, all=DECLARED)
    assert code == 1
    (failure,) = report["failures"]
    assert failure["endpoint"] == "https://api.hosted.example/v1"
    assert "outside `residency_allowed_regions`" in failure["problem"]
    contradicted = EDGE.replace("edge-fra.other.example", "dr.corp.example")
    code, report = audit(tmp_path / "again", contradicted, all=DECLARED)
    assert code == 1
    (failure,) = report["failures"]
    assert (
        "stated to be in 'de-fra' by `edge_fallback_clusters[0]`, but is in 'gb-lon1'"
        in (failure["problem"])
    )
