"""Broken inventories, as a careless or hostile operator writes them: each refused offline.

Every case runs the real `llmhost check` on an inventory (and group data) written
here, with a catalog, a runtime build and API keys that are otherwise valid, and
requires the exit code (1: problems found; 2: the inventory cannot be read), the
key (or file and line) in the message, and no traceback. No host is contacted:
the hosts' names do not resolve.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.catalog import ModelFile
from llmhost.cli import main
from llmhost.paths import REPO_ROOT
from llmhost.runtimes import LlamaCppBuild, record_build
from llmhost.secrets import add_api_key
from roles._common.site import stages
from tests.unit.test_model_role import DIGEST, model_file

# Where the endpoints a serving host calls are (the residency audit refuses undeclared ones).
DECLARED = (
    '{"deb.debian.org": "gb", "security.debian.org": "gb", "10.0.0.5": "gb-lon1", '
    '"files.pythonhosted.org": "gb"}'
)
SERVE = (
    '"region": "gb-lon1", "hardware": "cpu", "model_name": "tiny", '
    f'"model_registries": ["10.0.0.5:5000"], "residency_endpoints": {DECLARED}'
)


@pytest.fixture(autouse=True)
def valid_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog with a mirrored model, a llama.cpp build for `cpu`, and an API key."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.toml").write_text(model_file("tiny", digest=DIGEST))
    (models / "big.toml").write_text(model_file("big", digest=DIGEST, min_hardware="l40s"))
    (models / "unmirrored.toml").write_text(model_file("unmirrored", digest=None))
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(models))
    builds = tmp_path / "builds.toml"
    files = (ModelFile("llama-server", 1, "1" * 64), ModelFile("llama-bench", 1, "2" * 64))
    record_build(LlamaCppBuild("cpu", "sha256:" + "e" * 64, files), builds)
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(builds))
    secrets = tmp_path / "secrets"
    add_api_key(secrets, "team-a")
    return secrets


def check(
    tmp_path: Path, inventory: str, *, where: str = "inventory", **group_data: str
) -> tuple[int, str]:
    directory = tmp_path / where
    (directory / "group_data").mkdir(parents=True)
    for group, text in group_data.items():
        (directory / "group_data" / f"{group}.py").write_text(text)
    path = directory / "prod.py"
    secrets = tmp_path / "secrets"
    path.write_text(inventory.replace("SECRETS", repr(str(secrets))))
    result = CliRunner().invoke(main, ["check", str(path)])
    return result.exit_code, result.output


def serving(extra: str = "", name: str = "gpu-1") -> str:
    comma = ", " if extra else ""
    return f'serving = [("{name}", {{{SERVE}, "secrets_dir": SECRETS{comma}{extra}}})]\n'


# (id, inventory text, {group: group_data text}, exit code, what the message must name)
CASES = [
    # -- the inventory file itself (exit 2: it cannot be read) ----------------------------
    ("syntax-error", 'serving = [("gpu-1", {"region": "gb"}\n', {}, 2, "prod.py:1: invalid Python"),
    (
        "exception-in-file",
        "x = 1 / 0\nserving = ['gpu-1']\n",
        {},
        2,
        "prod.py:1: ZeroDivisionError",
    ),
    ("undefined-name", "serving = [HOST]\n", {}, 2, "prod.py:1: NameError"),
    ("group-holds-a-list", 'serving = [("a", {}), ["b"]]\n', {}, 2, "entry 1 of `serving`"),
    ("host-data-not-a-dict", 'serving = [("a", "gb-lon1")]\n', {}, 2, "entry 0 of `serving`"),
    ("host-tuple-of-three", 'serving = [("a", {}, {})]\n', {}, 2, "entry 0 of `serving`"),
    ("group-tuple-of-three", 'serving = (["a"], {}, {})\n', {}, 2, "not (hosts, data)"),
    ("group-of-numbers", "serving = [1, 2]\n", {}, 2, "entry 0 of `serving` is 1"),
    ("empty-host-name", 'serving = [""]\n', {}, 2, "entry 0 of `serving`"),
    ("host-listed-twice", 'serving = ["a", "a"]\n', {}, 2, "lists a twice"),
    (
        "host-data-disagrees-between-groups",
        'serving = [("a", {"hardware": "cpu"})]\ngpu = [("a", {"hardware": "l40s"})]\n',
        {},
        2,
        "key `hardware`: inventory",
    ),
    ("no-hosts", "serving = []\n", {}, 2, "resolves to no hosts"),
    ("group-data-syntax-error", serving(), {"serving": "x = (\n"}, 2, "serving.py:1"),
    # -- identity: region, hardware, residency --------------------------------------------
    (
        "region-missing",
        'serving = [("a", {"hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: is missing",
    ),
    (
        "region-trailing-newline",
        'web = [("a", {"region": "gb\\n", "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 'gb\\n' is not a region code",
    ),
    (
        "region-trailing-space",
        'web = [("a", {"region": "gb ", "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 'gb ' is not a region code",
    ),
    (
        "region-upper-case",
        'web = [("a", {"region": "GB", "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 'GB'",
    ),
    (
        "region-outside-uk-eu",
        'web = [("a", {"region": "us-east-1", "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 'us-east-1' is outside",
    ),
    (
        "region-not-a-country",
        'web = [("a", {"region": "zz-lab", "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 'zz-lab' is outside",
    ),
    (
        "region-not-a-string",
        'web = [("a", {"region": 44, "hardware": "cpu"})]\n',
        {},
        1,
        "key `region`: 44",
    ),
    (
        "policy-on-the-host",
        'web = [("a", {"region": "gb", "hardware": "cpu", "residency_allowed_regions": ["gb"]})]\n',
        {},
        1,
        "key `residency_allowed_regions`: is set on the host itself",
    ),
    (
        "policy-in-a-group-file",
        'web = [("a", {"region": "gb", "hardware": "cpu"})]\n',
        {"web": 'residency_allowed_regions = ["gb", "us"]\n'},
        1,
        "key `residency_allowed_regions`: is set in group `web`",
    ),
    (
        "policy-in-a-group-tuple",
        'web = ([("a", {"region": "gb", "hardware": "cpu"})], '
        '{"residency_allowed_regions": ["gb"]})\n',
        {},
        1,
        "key `residency_allowed_regions`: is set in group `web`",
    ),
    (
        "policy-widened-beyond-uk-eu",
        'web = [("a", {"region": "gb", "hardware": "cpu"})]\n',
        {"all": 'residency_allowed_regions = ["gb", "us"]\n'},
        1,
        "key `residency_allowed_regions`: 'us' is not a UK or EU region code",
    ),
    (
        "policy-entry-with-newline",
        'web = [("a", {"region": "gb", "hardware": "cpu"})]\n',
        {"all": 'residency_allowed_regions = ["gb\\n"]\n'},
        1,
        "key `residency_allowed_regions`: 'gb\\n'",
    ),
    (
        "policy-key-misspelt",
        'web = [("a", {"region": "gb", "hardware": "cpu"})]\n',
        {"all": 'residency_allowed_region = ["gb"]\n'},
        1,
        "did you mean `residency_allowed_regions`?",
    ),
    (
        "hardware-unknown",
        'web = [("a", {"region": "gb", "hardware": "a100"})]\n',
        {},
        1,
        "key `hardware`: 'a100' is not a class",
    ),
    (
        "groups-disagree-on-hardware",
        'web = [("a", {"region": "gb"})]\ngpu = ["a"]\n',
        {"web": 'hardware = "cpu"\n', "gpu": 'hardware = "l40s"\n'},
        1,
        "key `hardware`: group `gpu` sets 'l40s' and group `web` sets 'cpu'",
    ),
    # -- unknown keys ------------------------------------------------------------------------
    (
        "typo-with-a-role-prefix",
        serving('"gateway_prot": 8443'),
        {},
        1,
        "key `gateway_prot`: is not an llmhost setting (set on the host itself); did you mean "
        "`gateway_port`?",
    ),
    (
        "typo-near-region",
        'web = [("a", {"region": "gb", "hardware": "cpu", "regoin": "gb"})]\n',
        {},
        1,
        "key `regoin`: is not an llmhost setting (set on the host itself); did you mean `region`?",
    ),
    (
        "typo-near-hardware",
        'web = [("a", {"region": "gb", "hardware": "cpu", "hardwre": "x"})]\n',
        {},
        1,
        "did you mean `hardware`?",
    ),
    (
        "typo-in-group-data",
        'web = [("a", {"region": "gb", "hardware": "cpu"})]\n',
        {"web": 'base_http_proxi = "http://p:3128"\n'},
        1,
        "key `base_http_proxi`: is not an llmhost setting (set in group `web`)",
    ),
    (
        "reserved-prefix",
        'web = [("a", {"region": "gb", "hardware": "cpu", "edge_listen_port": 443})]\n',
        {},
        1,
        "key `edge_listen_port`: is not an llmhost setting",
    ),
    # -- the NVIDIA driver (GPU classes) --------------------------------------------------
    (
        "nvidia-release-missing",
        'web = [("a", {"region": "gb", "hardware": "l40s"})]\n',
        {},
        1,
        "key `nvidia_driver_version`: is unset: class l40s pins driver branch 550",
    ),
    (
        "nvidia-release-of-another-branch",
        'web = [("a", {"region": "gb", "hardware": "l40s", '
        '"nvidia_driver_version": "570.86.15"})]\n',
        {},
        1,
        "key `nvidia_driver_version`: 570.86.15 is not a release of class l40s's driver branch 550",
    ),
    (
        "nvidia-modules-unknown",
        'web = [("a", {"region": "gb", "hardware": "l40s", "nvidia_driver_version": "550.127.08", '
        '"nvidia_kernel_modules": "nouveau"})]\n',
        {},
        1,
        "key `nvidia_kernel_modules`: 'nouveau' is not a kernel-module flavour",
    ),
    # -- ports -------------------------------------------------------------------------------
    (
        "port-as-string",
        serving('"gateway_port": "8443"'),
        {},
        1,
        "key `gateway_port`: expected int, got str",
    ),
    (
        "port-as-bool",
        serving('"gateway_port": True'),
        {},
        1,
        "key `gateway_port`: expected int, got bool",
    ),
    (
        "port-out-of-range",
        serving('"gateway_port": 70000'),
        {},
        1,
        "key `gateway_port`: 70000 is not a TCP port",
    ),
    (
        "gateway-on-a-colour-port",
        serving('"gateway_port": 8001'),
        {},
        1,
        "key `gateway_port`: 8001 is also `runtime_ports.blue`'s port",
    ),
    (
        "colours-share-a-port",
        serving('"runtime_ports": {"blue": 8001, "green": 8001}'),
        {},
        1,
        "8001 is also `runtime_ports.",
    ),
    (
        "colour-missing",
        serving('"runtime_ports": {"blue": 8001}'),
        {},
        1,
        "key `runtime_ports`: names ['blue']",
    ),
    (
        "registry-on-the-ssh-port",
        'registry = [("r", {"region": "gb", "hardware": "cpu", "registry_port": 22})]\n',
        {},
        1,
        "key `registry_port`: 22 is also `base_ssh_port`'s port",
    ),
    # -- endpoints and networks --------------------------------------------------------------
    (
        "proxy-without-scheme",
        'web = [("a", {"region": "gb", "hardware": "cpu", "base_http_proxy": "egress:3128"})]\n',
        {},
        1,
        "key `base_http_proxy`: 'egress:3128' is not usable: it needs an http:// or https:// "
        "scheme",
    ),
    (
        "proxy-ipv6-unbracketed",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_http_proxy": "http://2001:db8::1:3128"})]\n',
        {},
        1,
        "key `base_http_proxy`",
    ),
    (
        "proxy-password-not-echoed",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_http_proxy": "http://u:s3cr3t@egress:99999"})]\n',
        {},
        1,
        "'http://u:***@egress:99999' is not a URL",
    ),
    (
        "mirror-not-a-url",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_apt_mirror": "deb.internal", "base_apt_security_mirror": "http://s"})]\n',
        {},
        1,
        "key `base_apt_mirror`",
    ),
    (
        "mirror-without-security-mirror",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_apt_mirror": "http://deb.internal/debian"})]\n',
        {},
        1,
        "key `base_apt_security_mirror`",
    ),
    (
        "ntp-server-not-a-host",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_ntp_servers": ["ntp 1.internal"]})]\n',
        {},
        1,
        "key `base_ntp_servers`",
    ),
    (
        "no-proxy-with-a-comma",
        'web = [("a", {"region": "gb", "hardware": "cpu", '
        '"base_no_proxy": ["a.internal,b.internal"]})]\n',
        {},
        1,
        "key `base_no_proxy`",
    ),
    (
        "ssh-allow-not-a-network",
        'web = [("a", {"region": "gb", "hardware": "cpu", "base_ssh_allow_from": ["office"]})]\n',
        {},
        1,
        "key `base_ssh_allow_from`",
    ),
    (
        "password-login-would-lock-out",
        'web = [("a", {"region": "gb", "hardware": "cpu", "ssh_password": "pw"})]\n',
        {},
        1,
        "key `ssh_password`",
    ),
    (
        "registry-with-a-scheme",
        serving('"model_registries": ["https://mirror:5000"]'),
        {},
        1,
        "key `model_registries`: 'https://mirror:5000' is not host:port",
    ),
    (
        "registry-ipv6-unbracketed",
        serving('"model_registries": ["2001:db8::5:5000"]'),
        {},
        1,
        "key `model_registries`",
    ),
    (
        "registry-address-not-a-host",
        'registry = [("r", {"region": "gb", "hardware": "cpu", '
        '"registry_address": "mirror lon"})]\n',
        {},
        1,
        "key `registry_address`",
    ),
    (
        "tls-name-not-a-host",
        serving('"gateway_server_names": ["llm api"]'),
        {},
        1,
        "key `gateway_server_names`",
    ),
    # -- what a serving host serves ----------------------------------------------------------
    ("model-not-in-catalog", serving('"model_name": "nope"'), {}, 1, "key `model_name`"),
    (
        "model-not-mirrored",
        serving('"model_name": "unmirrored"'),
        {},
        1,
        "key `model_name`: model unmirrored has no OCI digest yet",
    ),
    (
        "model-too-big-for-the-class",
        serving('"model_name": "big"'),
        {},
        1,
        "key `model_name`: model big needs at least a l40s",
    ),
    (
        "engine-unknown",
        serving('"runtime_engine": "tgi"'),
        {},
        1,
        "key `runtime_engine`: 'tgi' is not a runtime",
    ),
    (
        "pull-jobs-zero",
        serving('"model_pull_jobs": 0'),
        {},
        1,
        "key `model_pull_jobs`: 0 is below 1",
    ),
    (
        "identity-without-a-key",
        serving('"gateway_identities": ["team-b"]'),
        {},
        1,
        "key `gateway_identities`: names identities with no key: team-b",
    ),
    (
        "tls-certificate-without-key",
        serving('"gateway_tls_certificate": "/etc/x.pem"'),
        {},
        1,
        "key `gateway_tls_certificate`: needs both",
    ),
    (
        "tls-files-missing",
        serving(
            '"gateway_tls_certificate": "/nonexistent/c.pem", '
            '"gateway_tls_key": "/nonexistent/k.pem"'
        ),
        {},
        1,
        "key `gateway_tls_certificate`: /nonexistent/c.pem does not exist",
    ),
    (
        "rate-limit-zero",
        serving('"gateway_rate_limit_rps": 0'),
        {},
        1,
        "key `gateway_rate_limit_rps`: 0 is below 1",
    ),
    ("gate-rate-zero", serving('"gate_rate_per_s": 0.0'), {}, 1, "key `gate_rate_per_s`"),
    (
        "gate-limit-unknown",
        serving('"gate_limits": {"ttft_p50_ms": 10}'),
        {},
        1,
        "key `gate_limits.ttft_p50_ms`",
    ),
    (
        "gate-prompts-missing",
        serving('"gate_prompts": "no/such/file.txt"'),
        {},
        1,
        "key `gate_prompts`",
    ),
    (
        "drain-timeout-zero",
        serving('"runtime_drain_timeout_s": 0'),
        {},
        1,
        "key `runtime_drain_timeout_s`: 0 is below 1",
    ),
]


@pytest.mark.parametrize(
    ("inventory", "group_data", "code", "named"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_a_bad_inventory_is_refused_offline_naming_what_is_wrong(
    tmp_path, inventory, group_data, code, named
):
    exit_code, output = check(tmp_path, inventory, **group_data)
    assert exit_code == code, output
    assert named in output, output
    assert "Traceback" not in output
    assert "Fix: " in output
    assert "s3cr3t" not in output


def test_the_cases_are_distinct_and_many():
    assert len({case[0] for case in CASES}) == len(CASES) >= 60


def test_every_problem_of_every_host_is_a_line_and_the_count_ends_it(tmp_path):
    inventory = (
        'web = [("a", {"region": "us", "hardware": "cpu"}), '
        '("b", {"region": "gb", "hardware": "a100"})]\n'
    )
    exit_code, output = check(tmp_path, inventory, all=f"residency_endpoints = {DECLARED}\n")
    assert exit_code == 1
    assert "host a: key `region`" in output and "host b: key `hardware`" in output
    assert output.rstrip().endswith("2 problems found in 2 host(s)")


def test_a_valid_serving_host_passes_and_a_gate_switched_off_is_a_warning(tmp_path):
    exit_code, output = check(tmp_path, serving())
    assert exit_code == 0, output
    assert "ok: 1 host(s) valid: gpu-1" in output
    exit_code, output = check(tmp_path, serving('"gate_enabled": False'), where="off")
    assert exit_code == 0, output
    assert "warning: host gpu-1: gate_enabled is false" in output


def test_a_gate_switched_off_in_a_test_group_is_not_warned_about(tmp_path):
    inventory = serving('"gate_enabled": False') + 'testing = ["gpu-1"]\n'
    exit_code, output = check(tmp_path, inventory)
    assert exit_code == 0 and "gate_enabled" not in output, output


def test_the_same_host_in_several_groups_with_the_same_data_is_fine(tmp_path):
    data = f'{{"region": "gb", "hardware": "cpu", "residency_endpoints": {DECLARED}}}'
    box = f'_box = ("box", {data})\n'
    exit_code, output = check(tmp_path, box + "serving = []\nregistry = [_box]\nweb = [_box]\n")
    assert exit_code == 0, output


def test_the_offline_check_runs_the_roles_deploy_site_runs_in_its_order():
    """roles/_common/site.py lists the roles again: it must stay in step with deploy/site.py."""
    tree = ast.parse((REPO_ROOT / "deploy" / "site.py").read_text())
    calls = sorted(
        (node.lineno, node.func.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    )
    # cutover has no inputs of its own: it acts on the gate's plan; the audit is no role
    roles = [name for _, name in calls if name not in ("cutover", "require_residency")]
    assert roles == [s.role for s in stages()]
    assert calls[0][1] == "require_residency", "the audit runs before any role"
