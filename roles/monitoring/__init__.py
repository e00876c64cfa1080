"""Role monitoring: exporters on every host; Prometheus, Alertmanager and Grafana (grafana.py)
on `monitoring` hosts.

preflight  settings and ports; the addresses allowed to scrape (the `monitoring` hosts'
           unless `monitoring_scrape_from` names networks)
install    Debian's node exporter everywhere; the GPU exporter (NVML, dcgm-exporter's
           names) where the class has GPUs or the setting says; on serving hosts the
           audit-log exporter (the gateway's requests per identity, colour and status);
           on `monitoring` hosts Debian's Prometheus and Alertmanager
configure  drop-ins over the vendor units (flags, hardening), our own unit for each
           llmhost exporter, the firewall (exporter ports for the scrapers only); on
           `monitoring` hosts the targets (one file_sd file per exporter, from the
           inventory), the alert rules (checked with `promtool check rules` before they
           replace the installed ones) and Alertmanager's receiver
service    every exporter running; Prometheus and Alertmanager reloaded when a file changed

It runs after base and before the gateway in deploy/site.py, so a host's monitoring
works before the host takes traffic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from llmhost.endpoints import ALERT_WEBHOOK, MONITORING, Call
from llmhost.errors import ConfigError
from llmhost.hardware import check_hardware, load_classes
from llmhost.onhost.layout import (
    COLOURS,
    GATEWAY_AUDIT_LOG,
    LLMHOST_CA,
    NODE_TEXTFILE_DIR,
    ONHOST_APP,
    STATE_FILE,
    STATE_METRICS_FILE,
)
from llmhost.render import render
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_at_least, check_networks, check_url, join_host_port
from roles._common.onhost import install_onhost_tools, runtimectl
from roles._common.operations import (
    firewall_only_from,
    reload_firewall,
    secret_upload_options,
)
from roles._common.ports import check_host_ports
from roles._common.scrapers import address_networks, address_of, scrape_sources, watchers
from roles.monitoring import evaldrift
from roles.monitoring.defaults import (
    ALERTMANAGER_STORAGE,
    ALERTMANAGER_UNIT,
    FILE_SD_DIR,
    GPU_EXPORTER_UNIT,
    NODE_EXPORTER_UNIT,
    PROMETHEUS_DIR,
    PROMETHEUS_STORAGE,
    PROMETHEUS_UNIT,
    RULES_FILE,
    MonitoringSettings,
)
from roles.monitoring.grafana import check_grafana, grafana, grafana_endpoints
from roles.monitoring.operations import rules_installed

EXPORTER_FIREWALL = "40-monitoring-exporters"
UI_FIREWALL = "41-monitoring-ui"
AUDIT_EXPORTER_UNIT = "llmhost-audit-exporter.service"
# The systemd units whose state node exporter reports (alerts on failed runtimes).
WATCHED_UNITS = "(llmhost-.+|nginx|docker-registry|prometheus.*|chrony|ssh)[.]service"


@dataclass(frozen=True)
class Plan:
    settings: MonitoringSettings
    gpu_exporter: bool
    audit_exporter: bool
    scrape_from: list[str]


@deploy("llmhost monitoring")
def monitoring() -> None:
    plan = check()
    exporters(plan)
    evaldrift.eval_drift(plan.settings)  # serving hosts: the production eval's timer
    if "monitoring" in host.groups:
        server_side(plan.settings)


# -- preflight ---------------------------------------------------------------------------


def check() -> Plan:
    """Settings, ports and who may scrape, with no host contacted."""
    settings = from_data(MonitoringSettings, host.data, host.name)
    check_host_ports(host.name, host.data, host.groups)
    check_at_least(host.name, settings, ("monitoring_scrape_interval_s",), 1)
    check_networks(host.name, "monitoring_scrape_from", settings.monitoring_scrape_from)
    check_networks(host.name, "monitoring_ui_allow_from", settings.monitoring_ui_allow_from)
    if settings.monitoring_alert_webhook is not None:
        check_url(host.name, "monitoring_alert_webhook", settings.monitoring_alert_webhook)
    if not re.fullmatch(r"[1-9][0-9]*[hdwy]", settings.monitoring_retention):
        raise ConfigError(
            f"{settings.monitoring_retention!r} is not a duration",
            key="monitoring_retention",
            fix="give a number and a unit: 36h, 15d, 8w, 1y",
            host=host.name,
        )
    if "monitoring" in host.groups:
        check_grafana(host.name, settings)
        token_prices(settings)
    evaldrift.check(settings)
    return Plan(
        settings,
        gpu_exporter=runs_gpu_exporter(host.data, host.name),
        audit_exporter=bool(host.data.get("model_name")),
        scrape_from=scrape_sources(host.name, host.data),
    )


def endpoints() -> list[Call]:
    """What monitoring calls: on `monitoring` hosts every host's exporters, the alert
    webhook and Grafana's repository (with Grafana on); on serving hosts each monitoring
    host's Prometheus (the cutover asks it)."""
    settings = from_data(MonitoringSettings, host.data, host.name)
    calls = []
    if "monitoring" in host.groups:
        for member in inventory:
            jobs = ", ".join(job for job, _ in member_targets(member.name, member.data))
            calls.append(
                Call(
                    MONITORING,
                    target(member.name, member.data, settings.monitoring_node_exporter_port),
                    None,
                    note=f"Prometheus scrapes {member.name} ({jobs})",
                )
            )
        if settings.monitoring_alert_webhook:
            calls.append(
                Call(
                    ALERT_WEBHOOK,
                    settings.monitoring_alert_webhook,
                    "monitoring_alert_webhook",
                    note="Alertmanager posts alerts",
                    secret_path=True,
                )
            )
        calls += grafana_endpoints(settings)
    if host.data.get("model_name"):
        calls += [
            Call(MONITORING, url, None, note="the cutover asks whether this host is watched")
            for url in watchers()
        ]
    return calls


def warnings() -> list[str]:
    """An inventory without monitoring hosts: allowed (a test box), and said."""
    if inventory.get_group("monitoring", []):
        return []
    return [
        f"host {host.name}: the inventory has no `monitoring` host, so nothing watches it "
        "(its exporters answer on the host itself only)"
    ]


def runs_gpu_exporter(data: Any, name: str) -> bool:
    """The setting, else whether the host's class has GPUs."""
    chosen = from_data(MonitoringSettings, data, name).monitoring_gpu_exporter
    if chosen is not None:
        return chosen
    return check_hardware(data.get("hardware"), load_classes(), name).has_gpu


def target(name: str, data: Any, port: int) -> str:
    return join_host_port(address_of(name, data), port)


# -- every host: the exporters -------------------------------------------------------------


def exporters(plan: Plan) -> None:
    settings = plan.settings
    checked.packages(
        name="Install node exporter",
        packages=["prometheus-node-exporter"],
        extra_install_args="--no-install-recommends",
    )
    files.directory(
        name=f"{NODE_TEXTFILE_DIR}: textfile metrics", path=NODE_TEXTFILE_DIR, mode="0755"
    )
    units = [
        put_template(
            name="node exporter: flags (textfile, systemd) and hardening",
            path="monitoring/node-exporter.conf.j2",
            dest=dropin(NODE_EXPORTER_UNIT),
            mode="0644",
            port=settings.monitoring_node_exporter_port,
            textfile_dir=NODE_TEXTFILE_DIR,
            units=WATCHED_UNITS,
        )
    ]
    if plan.gpu_exporter or plan.audit_exporter:
        install_onhost_tools()
    units.append(
        own_unit(
            GPU_EXPORTER_UNIT,
            "monitoring/gpu-exporter.service.j2",
            plan.gpu_exporter,
            port=settings.monitoring_gpu_exporter_port,
        )
    )
    units.append(
        own_unit(
            AUDIT_EXPORTER_UNIT,
            "monitoring/audit-exporter.service.j2",
            plan.audit_exporter,
            port=settings.monitoring_audit_exporter_port,
            log=GATEWAY_AUDIT_LOG,
        )
    )
    systemd.daemon_reload(name="systemd: load changed monitoring units", _if=any_changed(*units))
    running = [(NODE_EXPORTER_UNIT, units[0])]
    running += [(GPU_EXPORTER_UNIT, units[1])] if plan.gpu_exporter else []
    running += [(AUDIT_EXPORTER_UNIT, units[2])] if plan.audit_exporter else []
    for unit, changed in running:
        checked.service(
            name=f"{unit}: running and enabled",
            service=unit,
            running=True,
            enabled=True,
            restarted=changed.will_change,
        )
    state_metrics()
    exporter_firewall(plan)


def dropin(unit: str) -> str:
    """Our drop-in over a vendor unit (its directory made first: files never make theirs)."""
    directory = f"/etc/systemd/system/{unit}.d"
    files.directory(name=f"{directory}: drop-ins", path=directory, mode="0755")
    return f"{directory}/llmhost.conf"


def own_unit(unit: str, template: str, wanted: bool, **variables: Any) -> OperationMeta:
    """Our unit for an llmhost exporter: written when wanted, else stopped and removed."""
    path = f"/etc/systemd/system/{unit}"
    if wanted:
        return put_template(
            name=f"{unit} (hardened)", path=template, dest=path, mode="0644", app=ONHOST_APP,
            **variables,
        )  # fmt: skip
    return checked.retired(
        name=f"{unit}: not running, not installed here", units=[unit], paths=[path]
    )


def state_metrics() -> None:
    """The state file's metrics, written once where the node exporter is new on a serving host.

    After that runtimectl rewrites them at every change of the state.
    """
    if host.get_fact(File, path=STATE_FILE) and not host.get_fact(File, path=STATE_METRICS_FILE):
        install_onhost_tools()
        server.shell(
            name=f"{STATE_METRICS_FILE}: the state's metrics",
            commands=[runtimectl("state-metrics")],
        )


def exporter_firewall(plan: Plan) -> None:
    settings = plan.settings
    ports = [settings.monitoring_node_exporter_port]
    ports += [settings.monitoring_gpu_exporter_port] if plan.gpu_exporter else []
    ports += [settings.monitoring_audit_exporter_port] if plan.audit_exporter else []
    rules = firewall_only_from(
        "monitoring",
        "exporters, for the monitoring hosts",
        EXPORTER_FIREWALL,
        ports,
        plan.scrape_from,
        closed="exporters closed (the inventory has no monitoring host)",
    )
    reload_firewall(rules)


# -- monitoring hosts: Prometheus and Alertmanager ---------------------------------------------


def server_side(settings: MonitoringSettings) -> None:
    checked.packages(
        name="Install Prometheus and Alertmanager",
        packages=["prometheus", "prometheus-alertmanager"],
        extra_install_args="--no-install-recommends",
    )
    files.directory(name=f"{FILE_SD_DIR}: scrape targets", path=FILE_SD_DIR, mode="0755")
    files.directory(
        name="Prometheus rules directory", path=RULES_FILE.rsplit("/", 1)[0], mode="0755"
    )
    prometheus_changed = [
        put_template(
            name="Prometheus: flags (config, retention, port)",
            path="monitoring/prometheus.conf.j2",
            dest=dropin(PROMETHEUS_UNIT),
            mode="0644",
            config=f"{PROMETHEUS_DIR}/prometheus.yml",
            storage=PROMETHEUS_STORAGE,
            retention=settings.monitoring_retention,
            port=settings.monitoring_prometheus_port,
        ),
    ]
    alertmanager_changed = [
        put_template(
            name="Alertmanager: flags (no cluster port) and hardening",
            path="monitoring/alertmanager.conf.j2",
            dest=dropin(ALERTMANAGER_UNIT),
            mode="0644",
            config=f"{PROMETHEUS_DIR}/alertmanager.yml",
            storage=ALERTMANAGER_STORAGE,
            port=settings.monitoring_alertmanager_port,
        )
    ]
    systemd.daemon_reload(
        name="systemd: load changed Prometheus drop-ins",
        _if=any_changed(*prometheus_changed, *alertmanager_changed),
    )
    reloaded = [
        put_template(
            name="Prometheus: scrape configuration",
            path="monitoring/prometheus.yml.j2",
            dest=f"{PROMETHEUS_DIR}/prometheus.yml",
            mode="0644",
            host=host.name,
            interval=settings.monitoring_scrape_interval_s,
            port=settings.monitoring_prometheus_port,
            alertmanager_port=settings.monitoring_alertmanager_port,
            rules_file=RULES_FILE,
            file_sd_dir=FILE_SD_DIR,
            ca_file=LLMHOST_CA,
            jobs=[{"name": name, "https": name == "runtime"} for name in TARGET_JOBS],
        ),
        *scrape_targets(),
        rules_installed(
            name=f"Alert rules {RULES_FILE} (promtool check rules first)",
            content=alert_rules(settings),
            dest=RULES_FILE,
        ),
    ]
    receiver = put_template(
        **secret_upload_options(),
        name="Alertmanager: receiver",
        path="monitoring/alertmanager.yml.j2",
        dest=f"{PROMETHEUS_DIR}/alertmanager.yml",
        mode="0640",
        group="prometheus",
        webhook=settings.monitoring_alert_webhook,  # may carry a token: 0640, never --diff
    )
    service(PROMETHEUS_UNIT, prometheus_changed, reloaded)
    service(ALERTMANAGER_UNIT, alertmanager_changed, [receiver])
    ui_firewall(settings)
    grafana(settings)


TARGET_JOBS = ("node", "gpu", "gateway", "runtime", "registry", "edge")


def scrape_targets() -> list[OperationMeta]:
    """One file_sd file per exporter, listing every inventory host that runs it."""
    groups: dict[str, list[dict[str, Any]]] = {job: [] for job in TARGET_JOBS}
    for member in inventory:
        for job, entry in member_targets(member.name, member.data, member.groups):
            groups[job].append(entry)
    return [
        checked.put(
            name=f"Prometheus targets: {job} ({len(entries)})",
            src=StringIO(json.dumps(entries, indent=2, sort_keys=True) + "\n"),
            dest=f"{FILE_SD_DIR}/{job}.json",
            mode="0644",
            create_remote_dir=False,
        )
        for job, entries in groups.items()
    ]


def member_targets(
    name: str, data: Any, groups: Collection[str] = ()
) -> list[tuple[str, dict[str, Any]]]:
    """(job, file_sd entry) for each exporter host ``name`` runs (``groups``: its groups)."""
    from roles._common.ports import ports_in_use  # every port a host uses, by key

    settings = from_data(MonitoringSettings, data, name)
    labels = {
        "host": name,
        "region": str(data.get("region")),
        "hardware": str(data.get("hardware")),
    }
    found = [("node", entry(target(name, data, settings.monitoring_node_exporter_port), labels))]
    if runs_gpu_exporter(data, name):
        port = settings.monitoring_gpu_exporter_port
        found.append(("gpu", entry(target(name, data, port), labels)))
    if data.get("model_name"):
        port = settings.monitoring_audit_exporter_port
        found.append(("gateway", entry(target(name, data, port), labels)))
        gateway = target(name, data, ports_in_use(name, data, ())["gateway_port"])
        for colour in COLOURS:
            path = {"colour": colour, "__metrics_path__": f"/metrics/{colour}"}
            found.append(("runtime", entry(gateway, {**labels, **path})))
    if "registry" in groups:
        port = ports_in_use(name, data, groups)["registry_metrics_port"]
        found.append(("registry", entry(target(name, data, port), labels)))
    if "edge" in groups:
        port = ports_in_use(name, data, groups)["edge_metrics_port"]
        found.append(("edge", entry(target(name, data, port), labels)))
    return found


def entry(address: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"targets": [address], "labels": labels}


def alert_rules(settings: MonitoringSettings) -> str:
    """The rules, with each serving model's time-to-first-token SLO (its `ttft_p95_ms`),
    and the price table that turns tokens into cost."""
    return render(
        "monitoring/rules.yml.j2",
        ttft_slos=ttft_slos(),
        token_prices=token_prices(settings),
        currency=settings.monitoring_currency,
        error_ratio=0.05,
        limited_ratio=0.10,
        gpu_memory_ratio=0.95,
        gpu_temperature_c=85,
    )


TOKEN_KINDS = ("prompt", "completion")  # the `kind` label of the token counters


def token_prices(settings: MonitoringSettings) -> list[tuple[str, float]]:
    """(kind, price of a million tokens), checked: a typo'd kind would price nothing."""
    prices = settings.monitoring_token_prices
    unknown = sorted(set(prices) - set(TOKEN_KINDS))
    if unknown:
        raise ConfigError(
            f"prices unknown token kinds: {', '.join(unknown)}",
            key="monitoring_token_prices",
            fix=f"price {' and '.join(TOKEN_KINDS)} tokens, per million",
            host=host.name,
        )
    for kind, price in prices.items():
        if price < 0:
            raise ConfigError(
                f"{kind}: {price} is below 0",
                key="monitoring_token_prices",
                fix="give a price of 0 or more per million tokens",
                host=host.name,
            )
    if not re.fullmatch(r"[A-Z]{3}", settings.monitoring_currency):
        raise ConfigError(
            f"{settings.monitoring_currency!r} is not a currency code",
            key="monitoring_currency",
            fix="give its ISO 4217 code, e.g. EUR or GBP",
            host=host.name,
        )
    return sorted(prices.items())


def ttft_slos() -> list[dict[str, Any]]:
    from llmhost.catalog import find

    slos = []
    for member in inventory:
        model = member.data.get("model_name")
        if not model:
            continue
        classes = load_classes()
        hardware = check_hardware(member.data.get("hardware"), classes, member.name)
        limit = find(model).gate_limits(hardware.name).get("ttft_p95_ms")
        if limit:
            slos.append({"host": member.name, "model": model, "seconds": limit / 1000})
    return slos


def service(unit: str, restart: list[OperationMeta], reload: list[OperationMeta]) -> None:
    """Running, restarted for changed flags, else reloaded for changed configuration.

    Never both: a process just (re)started reads its configuration anyway, and a SIGHUP
    sent before it handles the signal ends it (Go's default), cleanly in systemd's eyes,
    so it is not restarted. Alertmanager, installed and reloaded in one run, was left
    stopped that way.
    """
    started = checked.service(
        name=f"{unit}: running and enabled",
        service=unit,
        running=True,
        enabled=True,
        restarted=any(op.will_change for op in restart),
    )
    checked.service(
        name=f"{unit}: reloaded for changed configuration",
        service=unit,
        reloaded=True,
        _if=[any_changed(*reload), lambda: not started.did_change()],
    )


def ui_firewall(settings: MonitoringSettings) -> None:
    """Prometheus for `monitoring_ui_allow_from`, and for the serving hosts: before a cutover
    each asks it whether it is watched. Alertmanager only for the first."""
    prometheus, alertmanager = (
        settings.monitoring_prometheus_port,
        settings.monitoring_alertmanager_port,
    )
    ui = firewall_only_from(
        "monitoring",
        "Prometheus and Alertmanager",
        UI_FIREWALL,
        [prometheus, alertmanager],
        settings.monitoring_ui_allow_from,
        closed="Prometheus UI closed",
    )
    serving = firewall_only_from(
        "monitoring",
        "Prometheus, for the serving hosts' cutover check and the edges' token quotas",
        f"{UI_FIREWALL}-serving",
        [prometheus],
        sorted(set(serving_networks()) | set(token_quota_edges())),
        closed="no serving host or edge asks",
    )
    reload_firewall(ui, serving)


def token_quota_edges() -> list[str]:
    """The edges that ask for each team's tokens (a team has `tokens_per_hour`), by address."""
    from roles.edge.defaults import EdgeSettings

    asking = [
        member
        for member in inventory.get_group("edge", [])
        if from_data(EdgeSettings, member.data, member.name).asks_for_tokens()
    ]
    return address_networks(asking)


def serving_networks() -> list[str]:
    """The serving hosts' addresses, where they are IP addresses (others: `..._ui_allow_from`)."""
    return address_networks(member for member in inventory if member.data.get("model_name"))
