"""The llmhost certificate authority, kept on the control machine.

The CA signs the TLS certificates of llmhost's own services (the model
registry first). Its key never leaves the control machine; hosts receive the
CA certificate (to trust) and their own key and certificate. Issued
certificates are kept beside the CA and reissued only when their names change
or they near expiry, so converging twice uploads the same bytes: that is what
keeps a deploy idempotent even though key generation is random.

Back up the secrets directory: a rebuilt control machine without it would
mint a new CA that no host trusts.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
CERT_LIFETIME = datetime.timedelta(days=397)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    key_pem: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.touch(mode=0o600)
    temporary.write_bytes(data)
    temporary.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class CertificateAuthority:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key_path = directory / "ca.key"
        self.cert_path = directory / "ca.crt"

    def ensure(self) -> None:
        """Create the CA once; never replace an existing one."""
        if self.key_path.exists() and self.cert_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmhost CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key_path, _key_pem(key))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @property
    def certificate_pem(self) -> str:
        self.ensure()
        return self.cert_path.read_text()

    def _signed_by_us(self, cert: x509.Certificate) -> bool:
        """A certificate kept from before the CA was replaced must be issued again."""
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def issue(self, name: str, sans: list[str]) -> IssuedCertificate:
        """A server certificate for ``sans``; the cached one unless names changed or it expires."""
        self.ensure()
        issued = self.directory / "issued"
        cert_path, key_path = issued / f"{name}.crt", issued / f"{name}.key"
        meta_path = issued / f"{name}.json"
        wanted = sorted(set(sans))
        if cert_path.exists() and key_path.exists() and meta_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            fresh = cert.not_valid_after_utc - _now() > RENEW_BEFORE
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if (
                fresh
                and json.loads(meta_path.read_text())["sans"] == wanted
                and self._signed_by_us(cert)
                and cert.public_key() == key.public_key()  # an interrupted reissue
            ):
                return IssuedCertificate(cert_path.read_text(), key_path.read_text())
        key = ec.generate_private_key(ec.SECP256R1())
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CERT_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([_san(s) for s in wanted]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        meta_path.write_text(json.dumps({"sans": wanted}) + "\n")
        return IssuedCertificate(cert_path.read_text(), key_path.read_text())
