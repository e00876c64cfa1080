"""A stand-in OIDC issuer for tests: an RSA key, its JWKS, and the tokens it signs."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(value: int) -> str:
    """An integer as a JWK writes it: big-endian bytes, base64url without padding."""
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Issuer:
    """Signs RS256 tokens for ``issuer`` and ``audience`` with key ``kid``."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        kid: str = "k1",
        key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @classmethod
    def kept_in(cls, path: Path, issuer: str, audience: str) -> Issuer:
        """The issuer whose key is at ``path`` (made there, 0600, the first time)."""
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        return cls(issuer, audience, key=loaded)

    def jwk(self) -> dict[str, Any]:
        public = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": number(public.n),
            "e": number(public.e),
        }

    def jwks(self) -> str:
        return json.dumps({"keys": [self.jwk()]})

    def token(self, kid: str | None = None, **claims: Any) -> str:
        """A signed token: iss, aud, sub `alice` and an exp in 5 minutes, unless given."""
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        body = {
            "iss": self.issuer,
            "aud": self.audience,
            "exp": int(time.time()) + 300,
            "sub": "alice",
            **claims,
        }
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{b64(signature)}"
