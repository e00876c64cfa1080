"""Secrets llmhost makes and keeps on the control machine, outside the repository.

``secrets_dir`` (default ``inventories/secrets``, ignored by git) holds the CA
and the registry credentials. Values are generated once and then reused, so a
second converge uploads identical files. Nothing here ever goes into argv or a
log: roles upload secrets with ``files.put`` from memory, mode 0600/0640.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
