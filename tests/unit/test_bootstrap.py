"""`llmhost bootstrap`: what it pushes for which hosts, and the single box at loopback."""

from __future__ import annotations

from pathlib import Path

from llmhost.bootstrap import Plan, ServingHost, plan, push_commands, summary
from llmhost.inventory import load_inventory
from roles._common.scrapers import address_of
from roles.registry.defaults import endpoint
from tests.unit.test_residency_audit import world, write  # noqa: F401  (the fixture)

DECLARED = {".debian.org": "gb", "apt.grafana.com": "gb"}


def fleet(tmp_path: Path) -> Path:
    """Two llama.cpp hosts serving one model on class cpu, one vLLM host, a registry."""
    common = {"region": "gb", "residency_endpoints": DECLARED, "secrets_dir": "SECRETS"}
    hosts = [
        ("r1", {**common, "hardware": "cpu", "ssh_hostname": "10.0.0.5"}),
        ("s1", {**common, "hardware": "cpu", "ssh_hostname": "10.0.0.6", "model_name": "tiny"}),
        ("s2", {**common, "hardware": "cpu", "model_name": "tiny", "gateway_port": 8443}),
        (
            "g1",
            {**common, "hardware": "l40s", "model_name": "hubbed", "gateway_server_names": ["g"]},
        ),
        ("idle", {**common, "hardware": "cpu"}),
    ]
    text = f"hosts = {hosts!r}\nregistry = hosts[:1]\nmonitoring = hosts[:1]\nserving = hosts[1:]\n"
    return write(tmp_path, text.replace("'SECRETS'", "SECRETS"))


def test_the_plan_mirrors_each_model_once_and_builds_each_llama_cpp_class_once(tmp_path):
    found = plan(load_inventory(str(fleet(tmp_path))))
    assert [h.name for h in found.serving] == ["s1", "s2", "g1"], "idle serves no model"
    assert found.models == ["hubbed", "tiny"]
    assert found.llama_cpp_classes == ["cpu"], "l40s runs vLLM: its lock's wheels instead"
    assert [h.gateway_url for h in found.serving] == [
        "https://10.0.0.6:8000",
        "https://s2:8443",
        "https://g:8000",
    ]
    commands = [argv[3:] for _, argv in push_commands(found, "inv.py")]
    assert commands == [
        ["models", "mirror", "hubbed", "--inventory", "inv.py"],
        ["models", "mirror", "tiny", "--inventory", "inv.py"],
        ["runtimes", "build", "--class", "cpu", "--inventory", "inv.py"],
        ["runtimes", "publish-vllm", "--inventory", "inv.py"],
    ]


def test_the_summary_gives_the_gateway_the_ca_and_a_curl():
    found = Plan((ServingHost("@local", "tiny", "llama.cpp", "cpu", "https://box:8000"),))
    text = summary(found, "inventories/single_box.py", "/srv/secrets")
    assert "@local  https://box:8000  tiny on llama.cpp" in text
    assert "--cacert /srv/secrets/ca/ca.crt" in text
    assert text.rstrip().endswith("https://box:8000/v1/completions")
    assert "llmhost status inventories/single_box.py" in text


def test_the_box_a_deploy_runs_on_is_reached_at_loopback_unless_told_otherwise():
    assert address_of("@local", {}) == "127.0.0.1"
    assert address_of("@local", {"ssh_hostname": "10.1.1.1"}) == "10.1.1.1"
    assert address_of("web1", {}) == "web1"
    assert endpoint("@local", {}) == "127.0.0.1:5000"
    assert endpoint("@local", {"registry_address": "box.internal"}) == "box.internal:5000"
