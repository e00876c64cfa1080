"""The llmhost CA and registry credentials: made once, reused, so deploys stay idempotent."""

from __future__ import annotations

import datetime
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from llmhost import pki
from llmhost.pki import CertificateAuthority
from llmhost.secrets import REGISTRY_USER, registry_credentials


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path / "ca")
    authority.ensure()
    return authority


def test_ensure_creates_a_private_key_and_a_ca_certificate(tmp_path):
    authority = CertificateAuthority(tmp_path / "ca")
    authority.ensure()
    assert mode(authority.key_path) == 0o600
    assert mode(authority.directory) == 0o700
    certificate = x509.load_pem_x509_certificate(authority.cert_path.read_bytes())
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert certificate.subject == certificate.issuer
    assert authority.certificate_pem == authority.cert_path.read_text()


def test_ensure_never_replaces_an_existing_ca(ca):
    key, certificate = ca.key_path.read_bytes(), ca.cert_path.read_bytes()
    ca.ensure()
    CertificateAuthority(ca.directory).ensure()
    assert ca.key_path.read_bytes() == key
    assert ca.cert_path.read_bytes() == certificate


def test_issued_certificate_names_ip_and_dns_sans(ca):
    issued = load(ca.issue("registry-a", ["10.0.0.5", "registry.internal"]).certificate_pem)
    names = sans(issued)
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert names.get_values_for_type(x509.DNSName) == ["registry.internal"]


def test_ipv6_address_becomes_an_ip_san(ca):
    issued = load(ca.issue("registry-v6", ["2001:db8::5"]).certificate_pem)
    assert sans(issued).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("2001:db8::5")]
    assert sans(issued).get_values_for_type(x509.DNSName) == []


def test_issued_certificate_is_signed_by_the_ca_and_serves_tls_only(ca):
    issued = ca.issue("registry-a", ["10.0.0.5"])
    certificate = load(issued.certificate_pem)
    ca_certificate = load(ca.certificate_pem)
    certificate.verify_directly_issued_by(ca_certificate)  # raises when not signed by the CA
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_issued_key_matches_the_certificate_and_is_private(ca):
    issued = ca.issue("registry-a", ["10.0.0.5"])
    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    assert key.public_key() == load(issued.certificate_pem).public_key()
    assert mode(ca.directory / "issued" / "registry-a.key") == 0o600


def test_issuing_the_same_names_again_returns_the_same_bytes(ca):
    first = ca.issue("registry-a", ["10.0.0.5", "registry.internal"])
    again = ca.issue("registry-a", ["registry.internal", "10.0.0.5", "10.0.0.5"])
    assert again == first


def test_issuing_different_names_makes_a_new_certificate(ca):
    first = ca.issue("registry-a", ["10.0.0.5"])
    moved = ca.issue("registry-a", ["10.0.0.6"])
    assert moved.certificate_pem != first.certificate_pem
    assert moved.key_pem != first.key_pem
    assert sans(load(moved.certificate_pem)).get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.6")
    ]
    assert ca.issue("registry-a", ["10.0.0.6"]) == moved


def test_certificates_are_kept_per_name(ca):
    primary = ca.issue("registry-a", ["10.0.0.5"])
    recovery = ca.issue("registry-b", ["10.0.0.5"])
    assert recovery.certificate_pem != primary.certificate_pem
    assert ca.issue("registry-a", ["10.0.0.5"]) == primary


def test_certificate_near_expiry_is_reissued(ca, monkeypatch):
    first = ca.issue("registry-a", ["10.0.0.5"])
    lifetime = load(first.certificate_pem).not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    # The cached certificate now falls inside the renewal window.
    monkeypatch.setattr(pki, "RENEW_BEFORE", lifetime + datetime.timedelta(days=1))
    renewed = ca.issue("registry-a", ["10.0.0.5"])
    assert renewed.certificate_pem != first.certificate_pem
    load(renewed.certificate_pem).verify_directly_issued_by(load(ca.certificate_pem))


def test_certificate_outside_the_renewal_window_is_kept(ca, monkeypatch):
    first = ca.issue("registry-a", ["10.0.0.5"])
    lifetime = load(first.certificate_pem).not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    monkeypatch.setattr(pki, "RENEW_BEFORE", lifetime - datetime.timedelta(days=1))
    assert ca.issue("registry-a", ["10.0.0.5"]) == first


def test_issue_creates_the_ca_when_there_is_none(tmp_path):
    authority = CertificateAuthority(tmp_path / "ca")
    issued = authority.issue("registry-a", ["10.0.0.5"])
    assert authority.key_path.exists()
    load(issued.certificate_pem).verify_directly_issued_by(load(authority.certificate_pem))


# Registry credentials


def test_registry_credentials_are_created_once_private(tmp_path):
    secrets = tmp_path / "secrets"
    credentials = registry_credentials(secrets)
    path = secrets / "registry.json"
    assert mode(path) == 0o600
    assert mode(secrets) == 0o700
    assert credentials.username == REGISTRY_USER
    assert len(credentials.password) >= 24
    assert credentials.http_secret
    assert credentials.http_secret != credentials.password


def test_registry_credentials_are_stable_on_reload(tmp_path):
    first = registry_credentials(tmp_path)
    written = (tmp_path / "registry.json").read_bytes()
    assert registry_credentials(tmp_path) == first
    assert (tmp_path / "registry.json").read_bytes() == written


def test_registry_credentials_differ_between_secret_directories(tmp_path):
    assert (
        registry_credentials(tmp_path / "a").password
        != registry_credentials(tmp_path / "b").password
    )


def test_auth_json_holds_the_username_and_password_only(tmp_path):
    credentials = registry_credentials(tmp_path)
    assert json.loads(credentials.auth_json()) == {
        "username": credentials.username,
        "password": credentials.password,
    }
