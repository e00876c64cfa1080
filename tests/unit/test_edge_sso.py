"""SSO at the edge: the issuer's JWKS read into keys, and tokens judged by a real HAProxy.

HAProxy (Debian's 2.6, installed for the tests) runs here on the edge's own rendered
configuration, with no serving host up: a token it admits gets the 503 of an edge with no
cluster, one it refuses the edge's 401. The e2e test (tests/e2e/test_edge.py) sends SSO
requests through the testbed's edge to real gateways.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from llmhost.errors import ConfigError
from llmhost.testing.oidc import Issuer, number
from roles.edge import Member
from roles.edge.defaults import EdgeSettings
from roles.edge.sso import SigningKey, Sso, signing_keys, sso
from tests.unit.test_edge_role import NEEDS_HAPROXY, configuration, edge_files

ISSUER = "https://login.example.eu/realms/llm"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(ISSUER, "llmhost")


def test_the_jwks_signing_keys_become_pem_files_and_other_keys_are_left_out(tmp_path, issuer):
    curve = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    jwks = {
        "keys": [
            issuer.jwk(),
            {"kty": "EC", "kid": "k2", "crv": "P-256", "x": number(curve.x), "y": number(curve.y)},
            {**issuer.jwk(), "kid": "k3", "use": "enc"},
            {"kty": "oct", "kid": "k4", "k": "c2VjcmV0"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    keys = signing_keys("edge1", path)
    assert [(k.kid, k.alg) for k in keys] == [("k1", "RS256"), ("k2", "ES256")]
    assert keys[0].pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert keys[0].path.startswith("/etc/haproxy/llmhost/oidc/") and keys[0].path.endswith(".pem")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"issuer": "http://login.example.eu"}, "edge_oidc.issuer"),
        ({"gateway_identity": "nobody"}, "edge_oidc.gateway_identity"),
        ({"jwks_file": "/nonexistent/jwks.json"}, "edge_oidc.jwks_file"),
        ({"identity_claim": "$.sub"}, "edge_oidc.identity_claim"),
        ({"audience": "two words"}, "edge_oidc.audience"),
        ({"groups": "x"}, "edge_oidc"),
    ],
)
def test_a_bad_sso_setting_is_refused_naming_the_key(tmp_path, issuer, change, key):
    path = tmp_path / "jwks.json"
    path.write_text(issuer.jwks())
    entry = {
        "issuer": ISSUER,
        "audience": "llmhost",
        "jwks_file": str(path),
        "gateway_identity": "sso",
        **change,
    }
    with pytest.raises(ConfigError) as refused:
        sso("edge1", EdgeSettings(edge_oidc=entry), {"sso": "k" * 43})
    assert refused.value.key == key and refused.value.host == "edge1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def edge(tmp_path_factory, issuer):
    """HAProxy on the edge's configuration with SSO, its serving hosts down."""
    root = tmp_path_factory.mktemp("sso-edge")
    names = edge_files(root, "127.0.0.1")
    (root / "jwks.json").write_text(issuer.jwks())
    (key,) = signing_keys("edge1", root / "jwks.json")
    key_file = root / "k1.pem"
    key_file.write_text(key.pem)
    oidc = Sso(
        ISSUER,
        "llmhost",
        "sub",
        "team",
        False,
        "gateway-key",
        [SigningKey(key.kid, key.alg, key.pem, str(key_file))],
    )
    port = free_port()
    text = configuration(
        **names,
        port=port,
        metrics_port=free_port(),
        admin_socket=root / "admin.sock",
        oidc=oidc,
        servers=[Member("gpu-a", f"127.0.0.1:{free_port()}", False, "127.0.0.1")],  # none listens
        hosted=None,
        fallback_clusters=[],
        team_quotas=[],
    )
    text = text.replace("    user haproxy\n    group haproxy\n    chroot /var/lib/haproxy\n", "")
    (root / "edge.cfg").write_text(text)
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(root / "edge.cfg")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(root / "edge.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    context = ssl.create_default_context(cafile=str(names["ca_file"]))
    yield port, context
    process.terminate()
    process.wait(timeout=10)


def ask(edge, bearer: str) -> int:
    """The edge's status: 401 refused; 503 admitted (sent on to hosts that are not there)."""
    port, context = edge
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    connection.request("POST", "/v1/completions", b"{}", {"Authorization": f"Bearer {bearer}"})
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status != 401 or b"missing or invalid API key" in body
    return answer.status


@NEEDS_HAPROXY
def test_a_token_signed_by_the_issuer_for_this_audience_is_admitted(edge, issuer):
    assert ask(edge, issuer.token()) == 503, "admitted, and no serving host is up"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 10},
        {"iss": "https://evil.example"},
        {"aud": "another-service"},
        {"sub": ""},
    ],
    ids=["expired", "issuer", "audience", "no-identity"],
)
@NEEDS_HAPROXY
def test_a_token_with_a_wrong_claim_is_refused(edge, issuer, claims):
    assert ask(edge, issuer.token(**claims)) == 401


@NEEDS_HAPROXY
def test_a_token_signed_by_another_key_or_naming_another_kid_is_refused(edge, issuer):
    stranger = Issuer(ISSUER, "llmhost")
    assert ask(edge, stranger.token()) == 401
    assert ask(edge, issuer.token(kid="k9")) == 401
    assert ask(edge, issuer.token()[:-4] + "AAAA") == 401
    assert ask(edge, "k1") == 503, "an API key still works beside SSO"


def test_sso_requests_reach_the_gateways_with_the_edges_key_and_the_hosted_api_if_allowed():
    key = SigningKey("k1", "RS256", "pem", "/etc/haproxy/llmhost/oidc/a.pem")
    allowed = Sso(ISSUER, "llmhost", "email", None, True, "gateway-key", [key])
    text = configuration(oidc=allowed)
    assert 'http-request set-header Authorization "Bearer gateway-key" if sso' in text
    assert "acl hosted_allowed var(txn.identity) -m beg sso:" in text
    assert "jwt_payload_query('$.email')" in text and "txn.jwt_team" not in text
    assert 'jwt_verify(txn.jwt_alg,"/etc/haproxy/llmhost/oidc/a.pem")' in text
    assert "{ var(txn.jwt_kid) -m str k1 } { var(txn.jwt_alg) -m str RS256 }" in text
    refused = configuration(oidc=Sso(ISSUER, "llmhost", "sub", None, False, "gateway-key", [key]))
    assert "-m beg sso:\n" not in refused.split("acl hosted_allowed", 1)[1].split("\n\n", 1)[0]
