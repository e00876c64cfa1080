"""The edge role's plan, its HAProxy configuration and its refusals (no host is contacted)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from llmhost.errors import ConfigError
from llmhost.render import render
from llmhost.secrets import certificate_authority
from roles.edge import Member, edge
from roles.edge.defaults import CA_FILE, CERTIFICATE, CONFIG, DROPIN, EdgeSettings
from roles.gateway.cutover import drain_arguments
from tests.unit.pyinfra_plan import SECRETS_DIR, plan

HOST = {"region": "gb-lon1", "hardware": "cpu", "ssh_hostname": "10.0.0.9"}
SERVING = {"region": "gb-lon1", "hardware": "cpu", "model_name": "tiny"}
TWO_SERVING = {
    "gpu-a": ({**SERVING, "ssh_hostname": "10.0.0.1"}, ["serving"]),
    "gpu-b": ({**SERVING, "ssh_hostname": "10.0.0.2", "gateway_port": 9000}, ["serving"]),
}


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
        timeout=600,
        retries=2,
        interval_ms=1000,
        fall=2,
        rise=2,
        servers=[
            Member("gpu-a", "10.0.0.1:8000", True, "gpu-a.internal"),
            Member("gpu-b", "10.0.0.2:9000", False, "10.0.0.2"),
        ],
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


@pytest.mark.skipif(
    subprocess.run(["which", "haproxy"], capture_output=True).returncode != 0,
    reason="haproxy is not installed on this machine (scripts/setup installs it): its own "
    "check (`haproxy -c`) of the configuration still runs on the e2e tests' edge hosts",
)
def test_haproxy_accepts_the_configuration(tmp_path):
    authority = certificate_authority(tmp_path / "secrets")
    issued = authority.issue("edge", ["10.0.0.9"])
    (tmp_path / "edge.pem").write_text(issued.certificate_pem + issued.key_pem)
    (tmp_path / "ca.crt").write_text(authority.certificate_pem)
    path = tmp_path / "edge.cfg"
    path.write_text(configuration(certificate=tmp_path / "edge.pem", ca_file=tmp_path / "ca.crt"))
    checked = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_members_come_from_the_serving_group_with_their_own_ports():
    others = {**TWO_SERVING, "box": ({**SERVING, "ssh_hostname": "10.0.0.3"}, [])}
    planned = edge_plan({"edge_serving_group": "serving"}, others)
    assert "Edge: HAProxy over 2 serving host(s)" in planned
    assert "Edge: HAProxy over 3 serving host(s)" in edge_plan(others=others)


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
