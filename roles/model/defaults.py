"""Public settings of the model role: which catalog model a host serves, and where from."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.onhost.layout import CONFIG_DIR, STATE_DIR
from llmhost.settings import setting

STORE = f"{STATE_DIR}/blobs"  # verified blobs by sha256, shared by every model and build
MODELS_DIR = f"{STATE_DIR}/models"
AUTH_FILE = f"{CONFIG_DIR}/registry-auth.json"


@dataclass(frozen=True)
class ModelSettings:
    model_name: str | None = setting(
        None, "Catalog model (models/<name>.toml) this host serves; unset: no model is pulled"
    )
    model_registries: list[str] = setting(
        [],
        "Registries to pull from, in order (`host:port`: primary, then DR); empty means the "
        "`registry` group's hosts in inventory order",
    )
    model_pull_jobs: int = setting(4, "Blobs downloaded in parallel")


def model_directory(name: str, digest: str) -> str:
    """Where a model is materialised: one directory per name and manifest digest."""
    return f"{MODELS_DIR}/{name}@{digest}"
