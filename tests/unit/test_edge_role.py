"""The edge role's plan, its HAProxy configuration and its refusals (no host is contacted)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from llmhost.errors import ConfigError
from llmhost.render import render
from llmhost.secrets import add_api_key, api_keys, certificate_authority, hosted_api_key
from roles.edge import Member, edge
from roles.edge.defaults import CA_FILE, CERTIFICATE, CONFIG, DROPIN, EdgeSettings
from roles.edge.policy import (
    FallbackCluster,
    HostedFallback,
    Identity,
    TeamQuota,
    canary_rule,
)
from roles.gateway.cutover import drain_arguments
from tests.unit.pyinfra_plan import SECRETS_DIR, plan

HOST = {"region": "gb-lon1", "hardware": "cpu", "ssh_hostname": "10.0.0.9"}
SERVING = {"region": "gb-lon1", "hardware": "cpu", "model_name": "tiny"}
TWO_SERVING = {
    "gpu-a": ({**SERVING, "ssh_hostname": "10.0.0.1"}, ["serving"]),
    "gpu-b": ({**SERVING, "ssh_hostname": "10.0.0.2", "gateway_port": 9000}, ["serving"]),
}


def setup_module() -> None:
    if "team-a" not in api_keys(Path(SECRETS_DIR)):
        add_api_key(Path(SECRETS_DIR), "team-a")


def edge_plan(data=None, others=None, facts=None):
    return plan(edge, {**HOST, **(data or {})}, facts, groups=["edge"], name="edge1", others=others)


def commands(planned, prefix):
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def uploaded(planned, prefix):
    return [
        c.rsplit(", ", 1)[1].rstrip(")")
        for c in commands(planned, prefix)
        if c.startswith("FileUploadCommand(")
    ]


def configuration(**overrides):
    """The rendered HAProxy configuration for two serving hosts, one of them plain HTTP."""
    values = dict(
        port=8443,
        metrics_port=8405,
        certificate=CERTIFICATE,
        ca_file=CA_FILE,
        admin_socket="/run/haproxy/admin.sock",
        backend="llmhost_serving",
        canary_backend="llmhost_canary",
        canary_map="/etc/haproxy/llmhost/canary.map",
        timeout=600,
        retries=2,
        interval_ms=1000,
        fall=2,
        rise=2,
        servers=[
            Member("gpu-a", "10.0.0.1:8000", True, "gpu-a.internal"),
            Member("gpu-b", "10.0.0.2:9000", False, "10.0.0.2"),
        ],
        audit_tag="llmhost_edge",
        identities_map="/etc/haproxy/llmhost/identities.map",
        features=["chat", "summarise"],
        team_quotas=[TeamQuota("research", 600, None), TeamQuota("ops", None, 50000)],
        tokens_map="/etc/haproxy/llmhost/teams-over-tokens.map",
        oidc=None,
        team_requests="llmhost_team_requests",
        fallback_clusters=[
            FallbackCluster("fra", "edge-fra.example:8443", "edge-fra.example", "de-fra1")
        ],
        hosted=HostedFallback(
            url="https://api.example.eu/openai/v1",
            address="api.example.eu:443",
            host="api.example.eu",
            path="/openai/v1",
            key="hosted-secret",
            region="fr-par1",
            ca_pem=None,
        ),
        hosted_backend="llmhost_hosted",
        hosted_ca_file="@system-ca",
    )
    return render("edge/edge.cfg.j2", **{**values, **overrides})


def test_a_fresh_edge_installs_haproxy_writes_its_files_and_restarts_onto_them():
    planned = edge_plan(others=TWO_SERVING)
    assert "install haproxy socat" in commands(planned, "Install HAProxy")[0].replace("'", "")
    assert uploaded(planned, "Edge: its certificate and key") == [CERTIFICATE]
    assert "chmod 600 " + CERTIFICATE in commands(planned, "Edge: its certificate and key")
    assert uploaded(planned, "Edge: the CA the gateways'") == [CA_FILE]
    assert uploaded(planned, "Edge: HAProxy over 2 serving host(s)") == [CONFIG]
    assert uploaded(planned, "HAProxy: our configuration, in a sandbox") == [DROPIN]
    (restart, wait) = commands(planned, "HAProxy: our configuration and sandbox, restarted")
    assert restart == (
        f"haproxy -c -q -f {CONFIG} && systemctl daemon-reload && systemctl restart haproxy.service"
    )
    assert "sport = :8443" in wait
    assert uploaded(planned, "Firewall: allow TCP 8443 (LLM edge)") == [
        "/etc/llmhost/firewall.d/30-edge.nft"
    ]


def test_the_edge_certificate_names_its_address_and_carries_the_ca():
    edge_plan(others=TWO_SERVING)
    issued = Path(SECRETS_DIR) / "ca" / "issued" / "edge-edge1.crt"
    certificate = x509.load_pem_x509_certificate(issued.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.9"]


def test_the_configuration_has_every_serving_host_checked_and_verified():
    text = configuration()
    assert "balance leastconn" in text
    assert "http-check send meth GET uri /healthz" in text
    assert "default-server check inter 1000ms fall 2 rise 2" in text
    assert (
        "server gpu-a 10.0.0.1:8000 ssl verify required ca-file "
        f"{CA_FILE} verifyhost gpu-a.internal sni str(gpu-a.internal)"
    ) in text
    assert "server gpu-b 10.0.0.2:9000\n" in text, "a gateway without TLS is reached plainly"
    assert "retry-on conn-failure empty-response 502 503" in text
    assert "option redispatch 1" in text
    assert text.startswith("# managed by llmhost (role edge)")


NEEDS_HAPROXY = pytest.mark.skipif(
    subprocess.run(["which", "haproxy"], capture_output=True).returncode != 0,
    reason="haproxy is not installed on this machine (scripts/setup installs it): its own "
    "check (`haproxy -c`) of the configuration still runs on the e2e tests' edge hosts",
)


def edge_files(root: Path, address: str) -> dict[str, Path]:
    """The files HAProxy opens, written under ``root``; `configuration` overrides naming them."""
    authority = certificate_authority(root / "secrets")
    issued = authority.issue("edge", [address])
    written = {
        "certificate": (root / "edge.pem", issued.certificate_pem + issued.key_pem),
        "ca_file": (root / "ca.crt", authority.certificate_pem),
        "identities_map": (root / "identities.map", "k1 team-a:research:1\n"),
        "canary_map": (root / "canary.map", "percent 0\n"),
        "tokens_map": (root / "tokens.map", "ops 0\n"),
    }
    for path, text in written.values():
        path.write_text(text)
    return {name: path for name, (path, _) in written.items()}


@NEEDS_HAPROXY
def test_haproxy_accepts_the_configuration(tmp_path):
    path = tmp_path / "edge.cfg"
    path.write_text(configuration(**edge_files(tmp_path, "10.0.0.9")))
    checked = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    warnings = [
        line
        for line in (checked.stdout + checked.stderr).splitlines()
        if "WARNING" in line and "could not resolve address" not in line
    ]
    assert warnings == [], "only the example names, which do not resolve here, are warned of"


def test_the_members_come_from_the_serving_group_with_their_own_ports():
    others = {**TWO_SERVING, "box": ({**SERVING, "ssh_hostname": "10.0.0.3"}, [])}
    planned = edge_plan({"edge_serving_group": "serving"}, others)
    assert any(name.startswith("Edge: HAProxy over 2 serving host(s)") for name in planned)
    everyone = edge_plan(others=others)
    assert any(name.startswith("Edge: HAProxy over 3 serving host(s)") for name in everyone)


@pytest.mark.parametrize(
    ("data", "others", "key", "words"),
    [
        ({}, {}, "edge_serving_group", "nothing to send to"),
        ({"edge_serving_group": "nope"}, TWO_SERVING, "edge_serving_group", "group 'nope'"),
        ({"edge_port": 22}, TWO_SERVING, "edge_port", "also `base_ssh_port`"),
        ({"edge_check_fall": 0}, TWO_SERVING, "edge_check_fall", "is below 1"),
        ({"edge_retries": -1}, TWO_SERVING, "edge_retries", "is below 0"),
        ({"edge_allow_from": ["10.0.0.0/33"]}, TWO_SERVING, "edge_allow_from", "10.0.0.0/33"),
        ({"edge_gateway_ca": "/nowhere/ca.pem"}, TWO_SERVING, "edge_gateway_ca", "/nowhere"),
        (
            {},
            {
                "gpu-a": (
                    {**SERVING, "ssh_hostname": "10.0.0.1", "gateway_allow_from": ["10.9.0.0/16"]},
                    [],
                )
            },
            "gateway_allow_from",
            "not this edge (10.0.0.9)",
        ),
    ],
    ids=["none", "empty-group", "port-clash", "fall", "retries", "network", "ca", "not-admitted"],
)
def test_bad_edge_data_is_refused_before_any_host_is_touched(data, others, key, words):
    with pytest.raises(ConfigError) as refused:
        edge_plan(data, others)
    assert refused.value.key == key
    assert words in str(refused.value)


def test_a_serving_host_behind_an_edge_drains_for_its_cutover_with_that_edges_waits():
    from pyinfra.api import Config, Inventory, State
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    inventory = Inventory(
        ([("gpu-a", SERVING), ("edge1", {**HOST, "edge_check_interval_ms": 500})], {}),
        edge=(["edge1"], {}),
    )
    state = State(inventory, Config())
    with ctx_inventory.use(inventory), ctx_state.use(state):
        with ctx_host.use(inventory.get_host("gpu-a")):
            assert drain_arguments() == [
                "--drain-flag",
                "/run/llmhost-gateway-drain",
                "--drain-wait",
                "2.5",
                "--rejoin-wait",
                "2.5",
            ]
        with ctx_host.use(inventory.get_host("edge1")):
            assert drain_arguments() == [], "a host no edge fronts does not drain"


def test_the_waits_cover_the_checks_that_move_a_host_out_and_back():
    settings = EdgeSettings(edge_check_interval_ms=2000, edge_check_fall=3, edge_check_rise=1)
    assert settings.drain_wait_s() == 9 and settings.rejoin_wait_s() == 5


def test_the_fallback_tiers_come_after_every_serving_host_and_the_hosted_api_only_for_some():
    text = configuration()
    serving = text[text.index("\nbackend llmhost_serving") : text.index("\nbackend llmhost_canary")]
    lines = [line.strip() for line in serving.splitlines() if line.strip().startswith("server ")]
    assert [line.split()[1] for line in lines] == ["gpu-a", "gpu-b", "fallback-fra"]
    assert " backup " in lines[-1] and "verifyhost edge-fra.example" in lines[-1]
    assert (
        "http-response set-var(txn.tier) str(fallback:fra) if { srv_name fallback-fra }" in serving
    )
    assert "use_backend llmhost_hosted if no_cluster hosted_allowed" in text
    assert "may not use the hosted fallback" in text
    hosted = text[text.index("\nbackend llmhost_hosted") :]
    assert 'http-request set-header Authorization "Bearer hosted-secret"' in hosted
    assert "replace-path ^/v1(/.*)?$ /openai/v1\\1" in hosted
    assert "ca-file @system-ca verifyhost api.example.eu sni str(api.example.eu)" in hosted
    assert "del-header X-Llmhost-Edge-Request" in hosted, "our ids stay ours"


def test_the_edges_own_health_counts_its_serving_hosts_never_its_fallbacks():
    text = configuration()
    assert "acl serving_here srv_is_up(llmhost_serving/gpu-a)" in text
    assert "acl serving_here srv_is_up(llmhost_serving/gpu-b)" in text
    assert "srv_is_up(llmhost_serving/fallback-fra)" not in text
    assert "monitor fail unless serving_here" in text


def test_without_a_hosted_api_an_edge_with_no_cluster_says_so():
    text = configuration(hosted=None, fallback_clusters=[])
    assert "backend llmhost_hosted" not in text and " backup " not in text
    assert "there is no hosted fallback" in text


def test_the_identity_map_and_the_configuration_are_root_only():
    planned = edge_plan(
        {"edge_identities": {"team-a": {"team": "research", "hosted_fallback": True}}},
        TWO_SERVING,
    )
    (name,) = [n for n in planned if n.startswith("Edge: API keys of")]
    assert "chmod 600 /etc/haproxy/llmhost/identities.map" in planned[name]
    config = next(n for n in planned if n.startswith("Edge: HAProxy over"))
    assert f"chmod 600 {CONFIG}" in planned[config]
    key = api_keys(Path(SECRETS_DIR))["team-a"]
    assert Identity("team-a", key, "research", True).map_line() == f"{key} team-a:research:1"


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"edge_identities": {"nobody": {}}}, "edge_identities", "no key: nobody"),
        ({"edge_identities": {"team-a": {"tean": "x"}}}, "edge_identities.team-a", "unknown tean"),
        (
            {"edge_identities": {"team-a": {"team": "Has Space"}}},
            "edge_identities.team-a.team",
            "not a name",
        ),
        ({"edge_features": ["chat", "a b"]}, "edge_features", "'a b' is not a name"),
        (
            {"edge_fallback_clusters": [{"name": "fra", "address": "x"}]},
            "edge_fallback_clusters[0]",
            "missing region",
        ),
        (
            {
                "edge_fallback_clusters": [
                    {"name": "fra", "address": "http://x:1", "region": "de-fra1"}
                ]
            },
            "edge_fallback_clusters[0].address",
            "not host:port",
        ),
        (
            {"edge_fallback_clusters": [{"name": "fra", "address": "x:1", "region": "Frankfurt"}]},
            "edge_fallback_clusters[0].region",
            "not a region",
        ),
        (
            {
                "edge_hosted_fallback": {
                    "url": "http://api.example.eu/v1",
                    "key_file": "k",
                    "region": "fr-par1",
                }
            },
            "edge_hosted_fallback.url",
            "not an https:// URL",
        ),
        (
            {
                "edge_hosted_fallback": {
                    "url": "https://api.example.eu/v1",
                    "key_file": "absent",
                    "region": "fr-par1",
                }
            },
            "edge_hosted_fallback.key_file",
            "does not exist",
        ),
    ],
    ids=[
        "no-key",
        "typo",
        "team",
        "feature",
        "missing",
        "address",
        "region",
        "plain-url",
        "no-key-file",
    ],
)
def test_bad_policy_or_tiers_are_refused_naming_the_key(data, key, words):
    with pytest.raises(ConfigError) as refused:
        edge_plan(data, TWO_SERVING)
    assert refused.value.key == key, refused.value
    assert words in str(refused.value)


def test_a_hosted_key_file_open_to_others_is_refused(tmp_path):
    (tmp_path / "k").write_text("secret\n")
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        hosted_api_key(tmp_path, "k")
    (tmp_path / "k").chmod(0o600)
    assert hosted_api_key(tmp_path, "k") == "secret"
    with pytest.raises(ConfigError, match="not a file name"):
        hosted_api_key(tmp_path, "../k")


def test_a_fallback_edge_of_this_inventory_must_accept_this_edges_feature_tags():
    other = {**HOST, "ssh_hostname": "10.0.0.8", "edge_serving_group": "serving"}
    others = {**TWO_SERVING, "edge2": (other, ["edge"])}
    data = {
        "edge_serving_group": "serving",
        "edge_features": ["chat"],
        "edge_fallback_clusters": [
            {"name": "two", "address": "10.0.0.8:8443", "region": "gb-lon1"}
        ],
    }
    with pytest.raises(ConfigError) as refused:
        edge_plan(data, others)
    assert refused.value.key == "edge_features" and "edge edge2, which refuses" in str(
        refused.value
    )
    agreeing = {**others, "edge2": ({**other, "edge_features": ["chat"]}, ["edge"])}
    assert edge_plan(data, agreeing)


def test_a_team_over_its_request_quota_gets_429_naming_the_team():
    text = configuration()
    assert "http-request track-sc0 var(txn.team) table llmhost_team_requests" in text
    (refusal, tokens) = [line for line in text.splitlines() if "status 429" in line]
    assert "team research is over its quota of 600 requests a minute" in refusal
    assert refusal.endswith("if { var(txn.team) -m str research } { sc_http_req_rate(0) gt 600 }")
    assert "hdr Retry-After 60" in refusal
    assert "stick-table type string len 32 size 10k expire 2m store http_req_rate(60s)" in text
    assert "team ops is over its quota of 50000 tokens an hour" in tokens
    assert tokens.endswith(
        "if { var(txn.team) -m str ops } "
        "{ var(txn.team),map_str_int(/etc/haproxy/llmhost/teams-over-tokens.map,0) gt 0 }"
    ), "the quota timer marks a team over in the map"
    assert "track-sc0" not in configuration(team_quotas=[])
    only_tokens = configuration(team_quotas=[TeamQuota("ops", None, 50000)])
    assert "track-sc0" not in only_tokens and "stick-table" not in only_tokens


@pytest.mark.parametrize(
    ("teams", "key"),
    [
        ({"Research": {"requests_per_minute": 5}}, "edge_teams"),
        ({"research": {"requests_per_minute": 0}}, "edge_teams.research.requests_per_minute"),
        ({"research": {"requests_per_hour": 5}}, "edge_teams.research"),
        ({"research": {}}, "edge_teams.research"),
        ({"research": {"tokens_per_hour": 0}}, "edge_teams.research.tokens_per_hour"),
        ({"research": {"tokens_per_hour": 1000}}, "edge_teams.research.tokens_per_hour"),
    ],
    ids=["name", "zero", "unknown-field", "no-quota", "not-a-count", "no-monitoring-host"],
)
def test_a_bad_team_quota_is_refused(teams, key):
    with pytest.raises(ConfigError) as refused:
        edge_plan({"edge_teams": teams}, TWO_SERVING)
    assert refused.value.key == key


def test_the_canary_backend_follows_each_hosts_check_and_takes_no_request_until_enabled():
    text = configuration()
    canary = text[text.index("\nbackend llmhost_canary") : text.index("\nbackend llmhost_hosted")]
    lines = [line.strip() for line in canary.splitlines() if line.strip().startswith("server ")]
    assert [line.split()[1] for line in lines] == ["gpu-a", "gpu-b"], "never a fallback"
    assert all(" disabled track llmhost_serving/" in line for line in lines)
    assert "verifyhost gpu-a.internal" in lines[0] and " ssl " not in lines[1]
    share = "str(percent),map_str_int(/etc/haproxy/llmhost/canary.map,0)"
    assert share in text
    assert "use_backend llmhost_canary if canary_drawn canary_up" in text
    assert text.index("use_backend llmhost_hosted") < text.index("use_backend llmhost_canary")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("edge_canary_percent", 100),
        ("edge_canary_percent", -1),
        ("edge_canary_max_error_percent", 101),
        ("edge_canary_max_latency_ratio", 0.5),
        ("edge_canary_window_s", 5),
        ("edge_canary_min_requests", 0),
    ],
)
def test_a_bad_canary_rule_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError) as raised:
        canary_rule("edge1", EdgeSettings(**{key: value}))
    assert raised.value.key == key and raised.value.host == "edge1"


def test_no_canary_percent_means_no_canary_rule():
    assert canary_rule("edge1", EdgeSettings()) is None
    rule = canary_rule("edge1", EdgeSettings(edge_canary_percent=10, edge_canary_window_s=60))
    assert rule is not None and (rule.percent, rule.window_s, rule.min_requests) == (10, 60, 20)


MONITORED = {**TWO_SERVING, "mon": ({**HOST, "ssh_hostname": "10.0.0.7"}, ["monitoring"])}
TOKEN_QUOTA = {"edge_teams": {"research": {"tokens_per_hour": 100000}}}


def test_a_token_quota_gets_a_hardened_timer_asking_the_monitoring_hosts_prometheus():
    planned = edge_plan(TOKEN_QUOTA, MONITORED)
    (service,) = [n for n in planned if n.startswith("llmhost-edge-quota.service (hardened)")]
    assert service.endswith("token quotas of 1 team(s)")
    assert any(n.startswith("llmhost-edge-quota.timer (every 15 s)") for n in planned)
    assert any(n.startswith("llmhost-edge-quota.timer: running and enabled") for n in planned)
    assert uploaded(planned, "Edge: the teams with a token quota") == [
        "/etc/haproxy/llmhost/teams-over-tokens.map"
    ]
    assert not any(n.startswith("No token quota") for n in planned)


def test_the_quota_unit_asks_prometheus_alone_as_root_with_no_capability():
    text = render(
        "edge/edge-quota.service.j2",
        app="/opt/llmhost/onhost.pyz",
        tokens_map="/etc/haproxy/llmhost/teams-over-tokens.map",
        admin_socket="/run/haproxy/llmhost-admin.sock",
        prometheus=["http://10.0.0.7:9090"],
        prometheus_addresses=["10.0.0.7/32"],
        quotas=[TeamQuota("research", None, 100000)],
        time_limit=35,
    )
    (start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert start == (
        "ExecStart=/usr/bin/python3 /opt/llmhost/onhost.pyz edge-quota "
        "--map /etc/haproxy/llmhost/teams-over-tokens.map "
        "--socket /run/haproxy/llmhost-admin.sock --prometheus http://10.0.0.7:9090 "
        "--quota research=100000"
    )
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 10.0.0.7/32\n" in text
    assert "CapabilityBoundingSet=\n" in text and "ProtectSystem=strict" in text


def test_without_a_token_quota_the_timer_is_retired():
    planned = edge_plan(others=MONITORED)
    assert any(n.startswith("No token quota: the quota timer off") for n in planned)
    assert not any(n.startswith("llmhost-edge-quota.service") for n in planned)


def test_an_edge_with_a_token_quota_calls_the_monitoring_hosts_prometheus():
    from pyinfra.api import Inventory
    from pyinfra.context import ctx_host, ctx_inventory

    from roles.edge import endpoints

    hosts = [("edge1", {**HOST, **TOKEN_QUOTA}), *[(n, d) for n, (d, _) in MONITORED.items()]]
    inventory = Inventory((hosts, {}), edge=(["edge1"], {}), monitoring=(["mon"], {}))
    with ctx_inventory.use(inventory), ctx_host.use(inventory.get_host("edge1")):
        calls = endpoints()
    assert [c.target for c in calls if c.kind == "monitoring"] == ["http://10.0.0.7:9090"]
