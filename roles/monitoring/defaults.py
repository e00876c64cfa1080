"""Public settings of the monitoring role: exporters on every host; Prometheus, Alertmanager and
Grafana on `monitoring`."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.settings import setting

NODE_EXPORTER_UNIT = "prometheus-node-exporter.service"
PROMETHEUS_UNIT = "prometheus.service"
ALERTMANAGER_UNIT = "prometheus-alertmanager.service"
GPU_EXPORTER_UNIT = "llmhost-gpu-exporter.service"
PROMETHEUS_DIR = "/etc/prometheus"
FILE_SD_DIR = f"{PROMETHEUS_DIR}/file_sd"  # one JSON file of targets per exporter
RULES_FILE = f"{PROMETHEUS_DIR}/rules/llmhost.yml"
PROMETHEUS_STORAGE = "/var/lib/prometheus/metrics2"  # Debian's default
ALERTMANAGER_STORAGE = "/var/lib/prometheus/alertmanager"
# The production eval on serving hosts (roles/monitoring/evaldrift.py): a oneshot service,
# its timer, and the user it runs as (reading state and gate reports through the
# `llmhost` group, writing nothing but its metrics).
EVAL_DRIFT_SERVICE = "llmhost-eval-drift.service"
EVAL_DRIFT_TIMER = "llmhost-eval-drift.timer"
EVAL_USER = "llmhost-eval"


@dataclass(frozen=True)
class MonitoringSettings:
    monitoring_node_exporter_port: int = setting(
        9100, "Port of node exporter (textfile and systemd collectors) on every host"
    )
    monitoring_gpu_exporter: bool | None = setting(
        None, "Run the GPU exporter (dcgm-exporter's metric names); unset: on GPU classes only"
    )
    monitoring_gpu_exporter_port: int = setting(9400, "Port of the GPU exporter")
    monitoring_audit_exporter_port: int = setting(
        9114, "Port of the gateway's audit-log exporter, on serving hosts"
    )
    monitoring_scrape_from: list[str] = setting(
        [],
        "Networks (CIDR) allowed to scrape the exporters; empty: the `monitoring` hosts' "
        "addresses (which must then be IP addresses)",
    )
    monitoring_prometheus_port: int = setting(9090, "Port of Prometheus on `monitoring` hosts")
    monitoring_alertmanager_port: int = setting(
        9093, "Port of Alertmanager on `monitoring` hosts (its cluster port stays closed)"
    )
    monitoring_ui_allow_from: list[str] = setting(
        [],
        "Networks (CIDR) allowed to reach Prometheus, Alertmanager and Grafana; empty: nobody "
        "but the host itself (reach them through an SSH tunnel)",
    )
    monitoring_retention: str = setting(
        "15d", "How long Prometheus keeps samples (`--storage.tsdb.retention.time`, e.g. 30d)"
    )
    monitoring_scrape_interval_s: int = setting(15, "Seconds between scrapes of every target")
    monitoring_cutover_wait_s: int = setting(
        90,
        "Seconds a cutover waits for a monitoring host's Prometheus to have scraped this host "
        "and loaded the alert rules; it refuses to switch after that",
    )
    monitoring_alert_webhook: str | None = setting(
        None,
        "URL Alertmanager posts alerts to (a webhook receiver: your pager's or chat's); "
        "unset: alerts are only shown in Alertmanager and Prometheus",
    )
    monitoring_token_prices: dict[str, float] = setting(
        {},
        "Price of a million tokens by kind (`prompt`, `completion`), in "
        "`monitoring_currency`: turns tokens per identity, team and feature into cost "
        "(`llmhost:token_cost_per_second`, the Usage and cost dashboard); empty: no cost",
    )
    monitoring_currency: str = setting("EUR", "Currency of `monitoring_token_prices` (a label)")
    monitoring_grafana: bool = setting(
        True,
        "Grafana on `monitoring` hosts, from Grafana's signed APT repository, with llmhost's "
        "dashboards; false: not installed (where it was, it is stopped and its port closed)",
    )
    monitoring_grafana_version: str = setting(
        "13.2.3",
        "Exact version of the `grafana` package, pinned with APT preferences "
        "(`apt-cache policy grafana` lists the repository's)",
    )
    monitoring_grafana_port: int = setting(
        3000, "Port of Grafana on `monitoring` hosts, open to `monitoring_ui_allow_from` only"
    )
    monitoring_grafana_apt_mirror: str | None = setting(
        None,
        "URL of an internal mirror of https://apt.grafana.com (its gpg.key and `stable main`), "
        "for hosts without egress; its key is still checked against Grafana's fingerprint",
    )
    monitoring_eval_schedule: str | None = setting(
        "hourly",
        "systemd OnCalendar of the production eval on serving hosts whose model has an eval "
        "set: the active colour answers it, scored as at its gate (score, drift, for the "
        "EvalScoreBelowGate alert); empty or unset: off",
    )
    monitoring_eval_tolerance: float = setting(
        0.05,
        "EvalScoreBelowGate fires when a production eval scores below the release's gated "
        "eval score minus this (0..1)",
    )
    monitoring_eval_timeout_s: int = setting(
        60, "Seconds the production eval waits for one answer; past it the run fails"
    )
