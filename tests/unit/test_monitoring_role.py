"""The monitoring role's plan: which exporters a host gets, who may scrape, Prometheus's files."""

from __future__ import annotations

import hashlib
import json

import pytest
from pyinfra.api import Inventory
from pyinfra.context import ctx_inventory

from llmhost.errors import ConfigError
from roles._common import checked
from roles._common.scrapers import scrape_sources
from roles.monitoring import alert_rules, member_targets, monitoring, token_quota_edges
from roles.monitoring.defaults import MonitoringSettings
from tests.unit import test_runtime_role as runtime_tests
from tests.unit.pyinfra_plan import per_argument, plan, record_calls
from tests.unit.test_model_role import host_data as serving_data

catalog = runtime_tests.catalog  # a catalog with the serving hosts' model (autouse fixture)

CPU = {"region": "gb-lon1", "hardware": "cpu", "ssh_hostname": "10.0.0.7"}
DROPIN = "/etc/systemd/system/prometheus-node-exporter.service.d/llmhost.conf"


def commands(planned: dict[str, list[str]], prefix: str) -> list[str]:
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def names(planned: dict[str, list[str]]) -> list[str]:
    return list(planned)


def test_every_host_gets_node_exporter_with_textfile_and_systemd_collectors():
    planned = plan(monitoring, dict(CPU))
    install = commands(planned, "Install node exporter")
    assert any("--no-install-recommends" in c and "prometheus-node-exporter" in c for c in install)
    assert any(c.endswith(f", {DROPIN})") for c in commands(planned, "node exporter: flags"))
    assert commands(planned, "prometheus-node-exporter.service: running and enabled")


def test_a_cpu_host_runs_no_gpu_exporter_and_a_gpu_class_does():
    cpu = plan(monitoring, dict(CPU))
    assert "llmhost-gpu-exporter.service: not running, not installed here" in cpu
    assert not any(n.startswith("llmhost-gpu-exporter.service (hardened)") for n in cpu)
    gpu = plan(monitoring, {**CPU, "hardware": "l40s"})
    assert commands(gpu, "llmhost-gpu-exporter.service (hardened)")
    assert commands(gpu, "llmhost-gpu-exporter.service: running and enabled")
    forced = plan(monitoring, {**CPU, "monitoring_gpu_exporter": True})
    assert commands(forced, "llmhost-gpu-exporter.service (hardened)")


def test_a_serving_host_runs_the_audit_exporter_over_the_gateways_log():
    planned = plan(monitoring, {**serving_data(), "ssh_hostname": "10.0.0.8"})
    assert commands(planned, "llmhost-audit-exporter.service (hardened)")
    assert not any(
        n.startswith("llmhost-audit-exporter.service (hardened)")
        for n in plan(monitoring, dict(CPU))
    )


def test_without_monitoring_hosts_the_exporters_are_closed_to_the_network():
    planned = plan(monitoring, dict(CPU))
    assert commands(planned, "Firewall: exporters closed") == []  # absent already: a noop
    assert "Firewall: exporters closed (the inventory has no monitoring host)" in planned


def with_monitor(monitor: dict) -> Inventory:
    """host1 and a monitoring host mon1 with ``monitor`` as its data."""
    return Inventory(([("host1", dict(CPU)), ("mon1", monitor)], {}), monitoring=(["mon1"], {}))


def test_the_monitoring_hosts_addresses_may_scrape_and_nobody_else():
    with ctx_inventory.use(with_monitor({**CPU, "ssh_hostname": "10.0.0.2"})):
        assert scrape_sources("host1", CPU) == ["10.0.0.2/32"]
        assert scrape_sources("mon1", CPU) == [], "a monitoring host scrapes itself on loopback"
    listed = plan(monitoring, {**CPU, "monitoring_scrape_from": ["192.0.2.0/24"]})
    rule = [n for n in listed if n.startswith("Firewall: allow TCP 9100")]
    assert rule == ["Firewall: allow TCP 9100 (exporters, for the monitoring hosts)"]


def test_a_monitoring_host_reached_by_name_needs_its_network_named():
    with ctx_inventory.use(with_monitor({**CPU, "ssh_hostname": "ops-1.internal"})):
        with pytest.raises(ConfigError, match="key `monitoring_scrape_from`") as raised:
            scrape_sources("host1", CPU)
        assert "not an IP address" in str(raised.value)
        assert scrape_sources("host1", {**CPU, "monitoring_scrape_from": ["10.9.0.0/16"]}) == [
            "10.9.0.0/16"
        ]


def test_a_monitoring_host_gets_prometheus_alertmanager_targets_rules_and_a_receiver():
    planned = plan(
        monitoring,
        {**CPU, "monitoring_alert_webhook": "https://pager.internal/hook"},
        groups=["monitoring"],
    )
    install = commands(planned, "Install Prometheus and Alertmanager")
    assert any("prometheus prometheus-alertmanager" in c for c in install)
    for job in ("node", "gpu", "gateway", "runtime"):
        assert any(n.startswith(f"Prometheus targets: {job} (") for n in planned)
    rules = commands(planned, "Alert rules /etc/prometheus/rules/llmhost.yml")
    assert any("promtool check rules /etc/prometheus/rules/llmhost.yml.new" in c for c in rules)
    receiver = commands(planned, "Alertmanager: receiver")
    assert "chmod 640 /etc/prometheus/alertmanager.yml" in receiver
    assert "Firewall: Prometheus UI closed" in planned


@pytest.mark.parametrize("unit", ["prometheus.service", "prometheus-alertmanager.service"])
@pytest.mark.parametrize(
    ("start_commands", "reloaded"), [(["systemctl restart"], False), ([], True)]
)
def test_a_unit_started_or_restarted_in_the_run_is_not_also_reloaded(
    monkeypatch, unit, start_commands, reloaded
):
    # A SIGHUP right after a (re)start ended Alertmanager before it handled the signal.
    made = record_calls(monkeypatch, checked, "service")
    plan(monitoring, dict(CPU), groups=["monitoring"])
    started, _ = made[f"{unit}: running and enabled"]
    _config_changed, not_started = made[f"{unit}: reloaded for changed configuration"][1]["_if"]
    started.set_complete(True, start_commands, None)
    assert not_started() is reloaded


def test_rules_already_installed_are_not_checked_or_uploaded_again():
    with ctx_inventory.use(Inventory(([("host1", dict(CPU))], {}))):
        installed = hashlib.sha256(alert_rules(MonitoringSettings()).encode()).hexdigest()
    facts = {"Sha256File": per_argument({"path=/etc/prometheus/rules/llmhost.yml": installed})}
    planned = plan(monitoring, dict(CPU), facts=facts, groups=["monitoring"])
    assert (
        planned["Alert rules /etc/prometheus/rules/llmhost.yml (promtool check rules first)"] == []
    )


def test_targets_list_each_exporter_a_host_runs_with_its_labels():
    serving = {**serving_data(), "ssh_hostname": "10.0.0.8", "hardware": "l40s"}
    found = dict.fromkeys(["node", "gpu", "gateway", "runtime"], 0)
    entries = member_targets("gpu-1", serving)
    for job, _ in entries:
        found[job] += 1
    assert found == {"node": 1, "gpu": 1, "gateway": 1, "runtime": 2}
    runtime = [e for job, e in entries if job == "runtime"]
    assert runtime[0]["targets"] == ["10.0.0.8:8000"]
    assert runtime[0]["labels"]["__metrics_path__"] == "/metrics/blue"
    assert {e["labels"]["colour"] for e in runtime} == {"blue", "green"}
    assert json.dumps(entries[0][1]["labels"], sort_keys=True) == json.dumps(
        {"hardware": "l40s", "host": "gpu-1", "region": "gb-lon1"}, sort_keys=True
    )
    v6 = member_targets("v6", {**CPU, "ssh_hostname": "2001:db8::7"})
    assert v6[0][1]["targets"] == ["[2001:db8::7]:9100"]
    registry = member_targets("reg", {**CPU, "ssh_hostname": "10.0.0.9"}, ["registry"])
    assert [(job, e["targets"]) for job, e in registry] == [
        ("node", ["10.0.0.9:9100"]),
        ("registry", ["10.0.0.9:5001"]),
    ]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"monitoring_retention": "15 days"}, "monitoring_retention"),
        ({"monitoring_scrape_interval_s": 0}, "monitoring_scrape_interval_s"),
        ({"monitoring_scrape_from": ["ops"]}, "monitoring_scrape_from"),
        ({"monitoring_alert_webhook": "pager:80"}, "monitoring_alert_webhook"),
        ({"monitoring_node_exporter_port": 22}, "monitoring_node_exporter_port"),
    ],
)
def test_bad_monitoring_settings_are_refused_naming_the_key(data, key):
    with pytest.raises(ConfigError) as raised:
        plan(monitoring, {**CPU, **data})
    assert raised.value.key == key


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"monitoring_token_prices": {"prompt": 0.5, "input": 1.0}}, "monitoring_token_prices"),
        ({"monitoring_token_prices": {"prompt": -1.0}}, "monitoring_token_prices"),
        (
            {"monitoring_token_prices": {"prompt": 1.0}, "monitoring_currency": "euro"},
            "monitoring_currency",
        ),
    ],
    ids=["unknown-kind", "negative", "currency"],
)
def test_a_bad_price_table_is_refused_on_the_monitoring_host(data, key):
    with pytest.raises(ConfigError) as refused:
        plan(monitoring, {**CPU, **data}, groups=["monitoring"])
    assert refused.value.key == key


def test_an_edge_host_is_scraped_on_its_metrics_port():
    edge = {**CPU, "ssh_hostname": "10.0.0.5", "edge_metrics_port": 8406}
    jobs = {job: entry["targets"] for job, entry in member_targets("edge-1", edge, ["edge"])}
    assert jobs["edge"] == ["10.0.0.5:8406"]
    assert "edge" not in dict(member_targets("edge-1", edge, []))


def test_prometheus_admits_the_edges_that_ask_for_the_teams_tokens():
    quota = {"edge_teams": {"research": {"tokens_per_hour": 1000}}}
    requests_only = {"edge_teams": {"ops": {"requests_per_minute": 10}}}
    inventory = Inventory(
        (
            [
                ("edge-a", {"ssh_hostname": "10.0.0.5", **quota}),
                ("edge-b", {"ssh_hostname": "10.0.0.6", **requests_only}),
                ("edge-c", {"ssh_hostname": "edge-c.internal", **quota}),
            ],
            {},
        ),
        edge=(["edge-a", "edge-b", "edge-c"], {}),
    )
    with ctx_inventory.use(inventory):
        assert token_quota_edges() == ["10.0.0.5/32"], "a name is left to ..._ui_allow_from"
