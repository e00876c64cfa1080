"""Role edge: one endpoint for the fleet, HAProxy over the serving hosts' gateways.

preflight  settings and ports; the serving hosts it fronts (`edge_serving_group`), each
           gateway open to this edge; identities, teams, features and quotas; the fallback
           tiers (other regions' edges, the hosted API and its key); the CA of the gateways
install    Debian's HAProxy
configure  its certificate (from the llmhost CA), the CAs it verifies by, the root-only key
           map and configuration, the SSO issuer's keys (sso.py), a drop-in that points
           the vendor unit at it, the firewall
service    HAProxy checked (`haproxy -c`) and reloaded gracefully when a file changed
           (listeners are handed over, requests in flight finish); restarted when the
           drop-in changed; the token quotas' timer, where a team has one (quotas.py)

Every serving host is health-checked (`GET /healthz` on its gateway, which answers 503
while the host drains for a cutover) and requests go to the one with the fewest in
flight. A request whose host failed before the first byte of an answer is sent to
another; an answer under way is never repeated. With no serving host up, requests go to
the fallback tiers in order (policy.py reads them). A rolling deploy's canary takes its
share through a second backend of the same hosts, each disabled until the rollout enables
it (llmhost/canary.py drives it through the admin socket).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from llmhost.endpoints import FALLBACK, MONITORING, SERVING_GATEWAY, Call
from llmhost.errors import ConfigError
from llmhost.secrets import api_keys, certificate_authority, secrets_directory
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import (
    check_at_least,
    check_hostname,
    check_networks,
    join_host_port,
    on_host,
)
from roles._common.edges import fronted
from roles._common.facts import DirectoryEntries
from roles._common.operations import (
    firewall_only_from,
    firewall_rules,
    reload_firewall,
    secret_upload_options,
    wait_for_port,
)
from roles._common.ports import check_host_ports
from roles._common.scrapers import address_of, scrape_sources, watchers
from roles.edge import policy, quotas, sso
from roles.edge.defaults import (
    ADMIN_SOCKET,
    AUDIT_TAG,
    BACKEND,
    CA_FILE,
    CANARY_BACKEND,
    CANARY_MAP,
    CERTIFICATE,
    CONFIG,
    DROPIN,
    EDGE_DIR,
    HOSTED_BACKEND,
    HOSTED_CA_FILE,
    IDENTITIES_MAP,
    OIDC_DIR,
    PACKAGES,
    TEAM_REQUESTS,
    TOKENS_MAP,
    VENDOR_UNIT,
    EdgeSettings,
)
from roles.edge.policy import SYSTEM_CA
from roles.gateway.defaults import GatewaySettings


@dataclass(frozen=True)
class Member:
    """A serving host as the edge reaches it: its gateway's address and certificate name."""

    name: str
    address: str  # host:port, as HAProxy's `server` line takes it
    tls: bool
    verify_name: str  # the name its gateway's certificate is issued for


@dataclass(frozen=True)
class Plan:
    """What the edge sends where, and for whom: everything its configuration is made of."""

    settings: EdgeSettings
    members: list[Member]
    identities: list[policy.Identity]
    features: list[str]
    team_quotas: list[policy.TeamQuota]
    oidc: sso.Sso | None
    fallback_clusters: list[policy.FallbackCluster]
    hosted: policy.HostedFallback | None


@deploy("llmhost edge")
def edge() -> None:
    plan = check()  # the data alone: no fact is needed
    install()
    changed, dropin = configure(plan)
    service(changed, dropin, plan.settings)
    quotas.quota_timer(plan.settings, plan.team_quotas)  # token quotas: HAProxy is up


def check() -> Plan:
    """Settings, ports, the serving hosts, identities and fallback tiers; no host contacted."""
    settings = from_data(EdgeSettings, host.data, host.name)
    check_host_ports(host.name, host.data, {*host.groups, "edge"}, mine=["edge_port"])
    check_at_least(
        host.name,
        settings,
        ("edge_check_interval_ms", "edge_check_fall", "edge_check_rise", "edge_timeout_s"),
        1,
    )
    check_at_least(host.name, settings, ("edge_retries",), 0)
    policy.canary_rule(host.name, settings)  # read again by a rollout: checked here first
    check_networks(host.name, "edge_allow_from", settings.edge_allow_from)
    for name in settings.edge_server_names:
        check_hostname(host.name, "edge_server_names", name)
    gateway_ca(settings)
    secrets = secrets_directory(host.data, host.name)
    with on_host(host.name):
        keys = api_keys(secrets)
    clusters = policy.fallback_clusters(host.name, settings)
    check_fallback_edges(settings, clusters)
    team_quotas = policy.team_quotas(host.name, settings)
    quotas.check(team_quotas)
    return Plan(
        settings,
        members(settings),
        policy.identities(host.name, settings, keys),
        policy.features(host.name, settings),
        team_quotas,
        sso.sso(host.name, settings, keys),
        clusters,
        policy.hosted_fallback(host.name, settings, secrets),
    )


def check_fallback_edges(settings: EdgeSettings, clusters: list[policy.FallbackCluster]) -> None:
    """A fallback cluster whose edge is in this inventory must accept what this one sends:
    it checks the same feature tags again, and would refuse a tag it does not know."""
    by_address = {}
    for member in inventory.get_group("edge", []):
        theirs = from_data(EdgeSettings, member.data, member.name)
        address = join_host_port(address_of(member.name, member.data), theirs.edge_port)
        by_address[address] = (member.name, theirs)
    for cluster in clusters:
        if cluster.address not in by_address:
            continue  # another inventory's edge: its operators keep its policy
        name, theirs = by_address[cluster.address]
        missing = sorted(set(settings.edge_features) - set(theirs.edge_features))
        if missing:
            raise ConfigError(
                f"fallback cluster {cluster.name} is edge {name}, which refuses the feature "
                f"tags {', '.join(missing)} this edge accepts",
                key="edge_features",
                fix="give every edge the same edge_features (group_data/all.py)",
                host=host.name,
            )


def endpoints() -> list[Call]:
    """What the edge calls: the serving hosts' gateways, then each fallback tier, whose
    `region` must be an allowed one."""
    settings = from_data(EdgeSettings, host.data, host.name)
    calls = [
        Call(SERVING_GATEWAY, member.address, "edge_serving_group", note="the edge's pool")
        for member in members(settings)
    ]
    for index, entry in enumerate(settings.edge_fallback_clusters):
        calls.append(
            Call(
                FALLBACK,
                str(entry.get("address", "")),
                f"edge_fallback_clusters[{index}]",
                note=f"fallback cluster {entry.get('name')}",
                region=entry.get("region"),
            )
        )
    if settings.asks_for_tokens():
        calls += [
            Call(MONITORING, url, None, note="token quotas: each team's tokens")
            for url in watchers()
        ]
    hosted = settings.edge_hosted_fallback
    if hosted is not None:
        calls.append(
            Call(
                FALLBACK,
                str(hosted.get("url", "")),
                "edge_hosted_fallback",
                note="hosted API, the last resort",
                region=hosted.get("region"),
            )
        )
    return calls


def serving_hosts(settings: EdgeSettings) -> list[Any]:
    """The hosts this edge fronts; at least one, or the edge would answer nothing."""
    found = fronted(settings)
    if not found:
        where = (
            f"group {settings.edge_serving_group!r}"
            if settings.edge_serving_group
            else "this inventory"
        )
        raise ConfigError(
            f"no host of {where} serves a model: the edge would have nothing to send to",
            key="edge_serving_group",
            fix="name the group of the serving hosts (hosts with `model_name`)",
            host=host.name,
        )
    return found


def members(settings: EdgeSettings) -> list[Member]:
    me = address_of(host.name, host.data)
    found = []
    for member in serving_hosts(settings):
        gateway = from_data(GatewaySettings, member.data, member.name)
        check_admits(member.name, gateway.gateway_allow_from, me)
        address = address_of(member.name, member.data)
        found.append(
            Member(
                name=member.name,
                address=join_host_port(address, gateway.gateway_port),
                tls=gateway.gateway_tls,
                verify_name=(gateway.gateway_server_names or [address])[0],
            )
        )
    return found


def check_admits(member: str, allow_from: list[str], edge_address: str) -> None:
    """A serving host whose gateway admits only some networks must admit this edge."""
    if not allow_from:
        return
    try:
        address = ipaddress.ip_address(edge_address)
    except ValueError:
        return  # a name: the firewall admits networks, and only the operator knows this one's
    if not any(address in ipaddress.ip_network(net, strict=False) for net in allow_from):
        raise ConfigError(
            f"serving host {member}'s gateway admits only {', '.join(allow_from)}, "
            f"not this edge ({edge_address})",
            key="gateway_allow_from",
            fix=f"add {edge_address}/32 to {member}'s gateway_allow_from",
            host=host.name,
        )


def gateway_ca(settings: EdgeSettings) -> str:
    """The PEM the gateways' certificates must chain to: the operator's, else the llmhost CA."""
    if settings.edge_gateway_ca is None:
        return certificate_authority(secrets_directory(host.data, host.name)).certificate_pem
    path = Path(settings.edge_gateway_ca)
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist on this machine",
            key="edge_gateway_ca",
            fix="give the path of the CA certificate (PEM) that signs the gateways'",
            host=host.name,
        )
    return path.read_text()


def install() -> None:
    checked.packages(name="Install HAProxy", packages=PACKAGES)


def certificate_pem(settings: EdgeSettings) -> str:
    """The edge's certificate, the CA's and its key, in the one file HAProxy reads."""
    names = settings.edge_server_names or [address_of(host.name, host.data)]
    with on_host(host.name, key="secrets_dir"):
        authority = certificate_authority(secrets_directory(host.data, host.name))
        issued = authority.issue(f"edge-{host.name}", names)
    return issued.certificate_pem + authority.certificate_pem + issued.key_pem


def configure(plan: Plan) -> tuple[list[OperationMeta], OperationMeta]:
    """Write every file HAProxy reads; returns the files' operations and the drop-in's."""
    settings = plan.settings
    upload = secret_upload_options()
    files.directory(
        name=f"{EDGE_DIR}: the edge's configuration and key",
        path=EDGE_DIR,
        user="root",
        group="haproxy",
        mode="0750",
    )
    changed = [
        checked.put(
            **upload,
            name="Edge: its certificate and key",
            src=StringIO(certificate_pem(settings)),
            dest=CERTIFICATE,
            user="root",
            group="root",
            mode="0600",
            create_remote_dir=False,
        ),
        checked.put(
            name="Edge: the CA the gateways' certificates are checked against",
            src=StringIO(gateway_ca(settings)),
            dest=CA_FILE,
            mode="0644",
            create_remote_dir=False,
        ),
        checked.put(
            **upload,
            name=f"Edge: API keys of {len(plan.identities)} identities (root-only map)",
            src=StringIO("".join(f"{identity.map_line()}\n" for identity in plan.identities)),
            dest=IDENTITIES_MAP,
            user="root",
            group="root",
            mode="0600",
            create_remote_dir=False,
        ),
        checked.put(
            name="Edge: no canary share on disk (a rollout sets one at runtime)",
            src=StringIO("percent 0\n"),
            dest=CANARY_MAP,
            mode="0644",
            create_remote_dir=False,
        ),
        quotas.tokens_map(plan.team_quotas),
        *signing_keys(plan.oidc),
        hosted_ca(plan.hosted),
        put_template(
            **upload,
            name=f"Edge: HAProxy over {len(plan.members)} serving host(s)"
            + f", {len(plan.fallback_clusters)} fallback cluster(s)"
            + (", the hosted API" if plan.hosted else ""),
            path="edge/edge.cfg.j2",
            dest=CONFIG,
            mode="0600",
            user="root",
            group="root",
            port=settings.edge_port,
            metrics_port=settings.edge_metrics_port,
            certificate=CERTIFICATE,
            ca_file=CA_FILE,
            admin_socket=ADMIN_SOCKET,
            backend=BACKEND,
            canary_backend=CANARY_BACKEND,
            canary_map=CANARY_MAP,
            timeout=settings.edge_timeout_s,
            retries=settings.edge_retries,
            interval_ms=settings.edge_check_interval_ms,
            fall=settings.edge_check_fall,
            rise=settings.edge_check_rise,
            servers=plan.members,
            audit_tag=AUDIT_TAG,
            identities_map=IDENTITIES_MAP,
            features=plan.features,
            team_quotas=plan.team_quotas,
            team_requests=TEAM_REQUESTS,
            tokens_map=TOKENS_MAP,
            oidc=plan.oidc,
            fallback_clusters=plan.fallback_clusters,
            hosted=plan.hosted,
            hosted_backend=HOSTED_BACKEND,
            hosted_ca_file=HOSTED_CA_FILE if plan.hosted and plan.hosted.ca_pem else SYSTEM_CA,
        ),
    ]
    files.directory(name="HAProxy: drop-in directory", path=DROPIN.rsplit("/", 1)[0], mode="0755")
    dropin = put_template(
        name="HAProxy: our configuration, in a sandbox (drop-in)",
        path="edge/haproxy-llmhost.conf.j2",
        dest=DROPIN,
        mode="0644",
        config=CONFIG,
    )
    reload_firewall(
        firewall_rules(
            role="edge",
            purpose="LLM edge",
            name="30-edge",
            ports=[settings.edge_port],
            sources=settings.edge_allow_from,
        ),
        firewall_only_from(
            role="edge",
            purpose="edge metrics",
            name="31-edge-metrics",
            ports=[settings.edge_metrics_port],
            sources=scrape_sources(host.name, host.data),
            closed="edge metrics: no monitoring host, no rule",
        ),
    )
    return changed, dropin


def signing_keys(wanted: sso.Sso | None) -> list[OperationMeta]:
    """The SSO issuer's public keys, one file each; a key the issuer dropped is removed."""
    files.directory(name=f"{OIDC_DIR}: the SSO issuer's public keys", path=OIDC_DIR, mode="0755")
    keys = wanted.keys if wanted else []
    changed = [
        checked.put(
            name=f"Edge: SSO signing key {key.kid} ({key.alg})",
            src=StringIO(key.pem),
            dest=key.path,
            mode="0644",
            create_remote_dir=False,
        )
        for key in keys
    ]
    ours = {key.path.rsplit("/", 1)[1] for key in keys}
    present: list[str] = host.get_fact(DirectoryEntries, path=OIDC_DIR)
    for stale in sorted(set(present) - ours):
        changed.append(
            files.file(
                name=f"Edge: {OIDC_DIR}/{stale} is no key of the SSO issuer's now",
                path=f"{OIDC_DIR}/{stale}",
                present=False,
            )
        )
    return changed


def hosted_ca(hosted: policy.HostedFallback | None) -> OperationMeta:
    """The CA of the hosted API's certificate, when the operator gives one (else the system's)."""
    if hosted is None or hosted.ca_pem is None:
        return files.file(
            name="Edge: no CA of its own for the hosted API", path=HOSTED_CA_FILE, present=False
        )
    return checked.put(
        name="Edge: the CA the hosted API's certificate is checked against",
        src=StringIO(hosted.ca_pem),
        dest=HOSTED_CA_FILE,
        mode="0644",
        create_remote_dir=False,
    )


def service(changed: list[OperationMeta], dropin: OperationMeta, settings: EdgeSettings) -> None:
    """Reload for a changed file; restart for a changed drop-in (a reload re-reads the
    configuration the running HAProxy was started with, not the one the unit now names)."""
    valid = f"haproxy -c -q -f {CONFIG}"
    listening = wait_for_port(settings.edge_port, VENDOR_UNIT)
    server.shell(
        name="HAProxy: our configuration and sandbox, restarted onto them",
        commands=[
            f"{valid} && systemctl daemon-reload && systemctl restart {VENDOR_UNIT}",
            listening,
        ],
        _if=dropin.did_change,
    )
    server.shell(
        name="HAProxy: configuration valid, reloaded gracefully",
        commands=[f"{valid} && systemctl reload-or-restart {VENDOR_UNIT}", listening],
        _if=lambda: any_changed(*changed)() and not dropin.did_change(),
    )
    checked.service(
        name="HAProxy: running and enabled", service=VENDOR_UNIT, running=True, enabled=True
    )
