"""Secrets llmhost makes and keeps on the control machine, outside the repository.

``secrets_dir`` (default ``inventories/secrets``, ignored by git) holds the CA,
the registry credentials and the gateway's API keys. Values are generated once and then reused, so a
second converge uploads identical files. Nothing here ever goes into argv or a
log: roles upload secrets with ``files.put`` from memory, mode 0600/0640.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import REPO_ROOT
from llmhost.pki import CertificateAuthority
from llmhost.settings import from_data, setting

REGISTRY_USER = "llmhost"


@dataclass(frozen=True)
class SecretsSettings:
    secrets_dir: str = setting(
        "inventories/secrets",
        "Control-machine directory (relative to the repository, or absolute) holding the CA and "
        "registry credentials; back it up, keep it out of git",
    )


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str = field(repr=False)
    http_secret: str = field(repr=False)

    def auth_json(self) -> str:
        return json.dumps({"username": self.username, "password": self.password}) + "\n"


def secrets_directory(data: Any, host: str | None = None) -> Path:
    configured = Path(from_data(SecretsSettings, data, host).secrets_dir).expanduser()
    return configured if configured.is_absolute() else REPO_ROOT / configured


def certificate_authority(directory: Path) -> CertificateAuthority:
    return CertificateAuthority(directory / "ca")


def registry_credentials(directory: Path) -> RegistryCredentials:
    """The registry's credentials, generated on first use."""
    path = directory / "registry.json"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        values = {
            "username": REGISTRY_USER,
            "password": secrets.token_urlsafe(24),
            "http_secret": secrets.token_urlsafe(32),
        }
        temporary = path.with_suffix(".tmp")
        temporary.touch(mode=0o600)
        temporary.write_text(json.dumps(values, indent=2) + "\n")
        temporary.replace(path)
    values = json.loads(path.read_text())
    return RegistryCredentials(values["username"], values["password"], values["http_secret"])


API_KEY = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
IDENTITY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def api_keys(directory: Path) -> dict[str, str]:
    """Identity -> API key, from ``api-keys.json``; every entry checked (a bad one is refused)."""
    path = directory / "api-keys.json"
    if not path.exists():
        return {}
    keys = json.loads(path.read_text())
    if not isinstance(keys, dict):
        raise ConfigError(
            f"{path} is not a JSON object",
            key="api-keys.json",
            fix='map identities to keys: {"team-a": "<key>"}',
        )
    for identity, key in keys.items():
        if not IDENTITY.match(identity):
            raise ConfigError(
                f"identity {identity!r} in {path} is not a valid name",
                key="api-keys.json",
                fix="use lower-case letters, digits, . _ -",
            )
        if not isinstance(key, str) or not API_KEY.match(key):
            # The key itself is never echoed: it is a secret even when malformed.
            raise ConfigError(
                f"the key of {identity} in {path} is not 32-128 URL-safe characters",
                key="api-keys.json",
                fix=f"llmhost keys add {identity} --rotate",
            )
    return keys


def add_api_key(directory: Path, identity: str, rotate: bool = False) -> str:
    """Create (or with ``rotate`` replace) an identity's key; returns it, to show once."""
    if not IDENTITY.match(identity):
        raise ConfigError(
            f"{identity!r} is not a valid identity",
            key="identity",
            fix="use lower-case letters, digits, . _ - (at most 63)",
        )
    keys = api_keys(directory)
    if identity in keys and not rotate:
        raise ConfigError(
            f"{identity} already has a key", key="identity", fix="pass --rotate to replace it"
        )
    keys[identity] = secrets.token_urlsafe(32)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "api-keys.json"
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_text(json.dumps(keys, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
    return keys[identity]
