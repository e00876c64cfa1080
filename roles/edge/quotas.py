"""The edge's token quotas: a timer that reads each team's tokens from Prometheus.

Tokens are counted where answers are read, at the serving hosts' gateways (the audit
exporter's `llmhost_gateway_attributed_tokens_total`), and summed over the fleet by the
monitoring hosts' Prometheus. A timer on the edge asks it for each team's tokens of the
last hour and marks each team over its `tokens_per_hour` in HAProxy's map (through the
admin socket); the configuration answers such a team 429 (templates/edge/edge.cfg.j2).

check      a token quota needs a monitoring host to ask
install    the host-side tools (`onhost.pyz edge-quota`)
configure  the map on disk (every team with a token quota, none over), the hardened
           oneshot unit and its timer; none of it where no team has a token quota
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host, inventory
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import systemd

from llmhost.errors import ConfigError
from llmhost.onhost.layout import ONHOST_APP
from roles._common import checked
from roles._common.checked import put_template
from roles._common.onhost import install_onhost_tools
from roles._common.scrapers import address_networks, watchers
from roles.edge.defaults import (
    ADMIN_SOCKET,
    QUOTA_SERVICE,
    QUOTA_TIMER,
    TOKENS_MAP,
    EdgeSettings,
)
from roles.edge.policy import TeamQuota

UNITS_DIR = "/etc/systemd/system"
PROMETHEUS_TIMEOUT_S = 5


def token_quotas(quotas: list[TeamQuota]) -> list[TeamQuota]:
    return [quota for quota in quotas if quota.tokens_per_hour]


def check(quotas: list[TeamQuota]) -> None:
    """Token quotas are read from Prometheus: the inventory needs a monitoring host."""
    if token_quotas(quotas) and not watchers():
        team = token_quotas(quotas)[0].team
        raise ConfigError(
            "token quotas are counted by the monitoring hosts' Prometheus, and the inventory "
            "has no `monitoring` host",
            key=f"edge_teams.{team}.tokens_per_hour",
            fix="add a host to the `monitoring` group, or give the teams requests_per_minute",
            host=host.name,
        )


def tokens_map(quotas: list[TeamQuota]) -> OperationMeta:
    """The map HAProxy reads: every team with a token quota, none over (the timer sets)."""
    lines = "".join(f"{quota.team} 0\n" for quota in token_quotas(quotas))
    return checked.put(
        name="Edge: the teams with a token quota, none over until the timer says",
        src=StringIO(lines),
        dest=TOKENS_MAP,
        mode="0644",
        create_remote_dir=False,
    )


def quota_timer(settings: EdgeSettings, quotas: list[TeamQuota]) -> None:
    """The timer where a team has a token quota; else none, and what was there removed."""
    wanted = token_quotas(quotas)
    if not wanted:
        removed = checked.retired(
            name="No token quota: the quota timer off, its units removed",
            units=[QUOTA_TIMER],
            paths=[f"{UNITS_DIR}/{QUOTA_TIMER}", f"{UNITS_DIR}/{QUOTA_SERVICE}"],
        )
        systemd.daemon_reload(
            name="systemd: forget the quota timer's units", _if=removed.did_change
        )
        return
    install_onhost_tools()
    urls = watchers()
    units = [
        put_template(
            name=f"{QUOTA_SERVICE} (hardened): token quotas of {len(wanted)} team(s)",
            path="edge/edge-quota.service.j2",
            dest=f"{UNITS_DIR}/{QUOTA_SERVICE}",
            mode="0644",
            app=ONHOST_APP,
            tokens_map=TOKENS_MAP,
            admin_socket=ADMIN_SOCKET,
            prometheus=urls,
            # The addresses the unit may reach (a name would need DNS: left to the firewall).
            prometheus_addresses=address_networks(inventory.get_group("monitoring", [])),
            quotas=wanted,
            time_limit=PROMETHEUS_TIMEOUT_S * len(urls) + 30,
        ),
        put_template(
            name=f"{QUOTA_TIMER} (every {settings.edge_token_quota_interval_s} s)",
            path="edge/edge-quota.timer.j2",
            dest=f"{UNITS_DIR}/{QUOTA_TIMER}",
            mode="0644",
            interval=settings.edge_token_quota_interval_s,
        ),
    ]
    changed = any(unit.will_change for unit in units)
    checked.service(
        name=f"{QUOTA_TIMER}: running and enabled",
        service=QUOTA_TIMER,
        running=True,
        enabled=True,
        restarted=changed,
        daemon_reload=changed,
    )
