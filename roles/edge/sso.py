"""SSO at the edge: OIDC bearer tokens (JWTs) checked by HAProxy itself (`jwt_verify`).

`edge_oidc` names the issuer, the audience, and the issuer's keys as a JWKS file on the
control machine (its `jwks_uri`'s document, saved when the issuer rotates keys). Each key
becomes a PEM file on the edge; a token is admitted when its signature verifies with the
key its header names (`kid`, and the algorithm that key is for, never the one the token
asks for alone), its `iss` and `aud` are the configured ones and its `exp` is to come.
Its identity is `sso:<claim>` (`identity_claim`, default `sub`), its team the
`team_claim`'s value where one is named. Gateways still check an API key: the edge
presents the key of `gateway_identity` for every SSO request, and names the team as for
any other. Nothing here contacts a host or the issuer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from roles.edge.defaults import OIDC_DIR, EdgeSettings
from roles.edge.policy import check_fields, refuse

KEY = "edge_oidc"
FIELDS = {
    "issuer",
    "audience",
    "jwks_file",
    "gateway_identity",
    "identity_claim",
    "team_claim",
    "hosted_fallback",
}
CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # safe inside HAProxy's `$.claim`
KID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # safe in a config line, unquoted
TEXT = re.compile(r"[A-Za-z0-9:/._~%+-]{1,256}")  # an issuer or audience, unquoted
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
EC_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    pem: str
    path: str  # on the edge, as the configuration names it


@dataclass(frozen=True)
class Sso:
    issuer: str
    audience: str
    identity_claim: str
    team_claim: str | None
    hosted_fallback: bool
    gateway_key: str  # the API key the edge presents to the gateways for SSO requests
    keys: list[SigningKey]


def sso(host: str, settings: EdgeSettings, api_keys: dict[str, str]) -> Sso | None:
    entry = settings.edge_oidc
    if entry is None:
        return None
    check_fields(host, KEY, entry, {"issuer", "audience", "jwks_file", "gateway_identity"}, FIELDS)
    issuer = _text(host, "issuer", entry["issuer"])
    if urlsplit(issuer).scheme != "https":
        raise refuse(host, f"{KEY}.issuer", f"{issuer!r} is not an https:// URL", "give the iss")
    identity = entry["gateway_identity"]
    if identity not in api_keys:
        raise refuse(
            host,
            f"{KEY}.gateway_identity",
            f"{identity!r} has no API key: the gateways would refuse SSO requests",
            f"llmhost keys add {identity} (the edge presents its key for SSO users)",
        )
    hosted = entry.get("hosted_fallback", False)
    if not isinstance(hosted, bool):
        raise refuse(host, f"{KEY}.hosted_fallback", f"{hosted!r} is not true or false", "use True")
    return Sso(
        issuer=issuer,
        audience=_text(host, "audience", entry["audience"]),
        identity_claim=_claim(host, "identity_claim", entry.get("identity_claim", "sub")),
        team_claim=_claim(host, "team_claim", entry["team_claim"])
        if entry.get("team_claim")
        else None,
        hosted_fallback=hosted,
        gateway_key=api_keys[identity],
        keys=signing_keys(host, Path(str(entry["jwks_file"]))),
    )


def _text(host: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not TEXT.fullmatch(value):
        raise refuse(
            host, f"{KEY}.{field}", f"{value!r} is not a plain URL or name", "give it as issued"
        )
    return value


def _claim(host: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not CLAIM.fullmatch(value):
        raise refuse(host, f"{KEY}.{field}", f"{value!r} is not a claim name", "e.g. sub, email")
    return value


def signing_keys(host: str, path: Path) -> list[SigningKey]:
    """Each signing key of the JWKS at ``path``, as a PEM public key for `jwt_verify`."""
    where = f"{KEY}.jwks_file"
    if not path.is_file():
        raise refuse(
            host,
            where,
            f"{path} does not exist on this machine",
            "save the issuer's JWKS there (its jwks_uri, from /.well-known/openid-configuration)",
        )
    try:
        document = json.loads(path.read_text())
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise refuse(
            host, where, f"{path} is not a JWKS ({error})", "give the issuer's JWKS"
        ) from error
    found = [key for entry in entries if (key := signing_key(host, entry)) is not None]
    if not found:
        raise refuse(host, where, f"{path} has no RSA or EC signing key", "give the issuer's JWKS")
    return found


def signing_key(host: str, entry: Any) -> SigningKey | None:
    """One JWK as a key HAProxy can verify with; None for a key that is not for signatures."""
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not KID.fullmatch(kid):
        raise refuse(
            host, f"{KEY}.jwks_file", f"a key's kid {kid!r} is missing or unusual", "give kids"
        )
    try:
        if entry.get("kty") == "RSA":
            alg = entry.get("alg", "RS256")
            if alg not in RSA_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} is not one of {', '.join(RSA_ALGORITHMS)}")
            public: Any = rsa.RSAPublicNumbers(
                _number(entry["e"]), _number(entry["n"])
            ).public_key()
        elif entry.get("kty") == "EC":
            curve = entry["crv"]
            alg = EC_ALGORITHMS[curve]
            public = ec.EllipticCurvePublicNumbers(
                _number(entry["x"]), _number(entry["y"]), EC_CURVES[curve]
            ).public_key()
        else:
            return None  # a symmetric key has no business in a published JWKS
    except (KeyError, ValueError, TypeError) as error:
        raise refuse(
            host, f"{KEY}.jwks_file", f"key {kid}: {error}", "give the issuer's JWKS as published"
        ) from error
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    name = hashlib.sha256(kid.encode()).hexdigest()[:16]
    return SigningKey(kid, alg, pem, f"{OIDC_DIR}/{name}.pem")


def _number(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
