"""Where the repository keeps what roles and the CLI read.

llmhost runs from a checkout: the repository is the source of truth that a
disaster-recovery rebuild converges from, so templates and catalogs are read
from it rather than from package data.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = REPO_ROOT / "templates"
INVENTORIES = REPO_ROOT / "inventories"
HARDWARE_CATALOG = INVENTORIES / "hardware.toml"
MODELS = REPO_ROOT / "models"
