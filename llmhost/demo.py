"""The end-to-end demo's model: a tiny llama GGUF made here, mirrored, pulled by digest.

It is generated deterministically (same bytes every run), so the demo needs no
hub and its catalog entry is the same each time.
"""

from __future__ import annotations

from pathlib import Path

from llmhost.catalog import find, model_toml
from llmhost.mirror import RegistryAccess, mirror
from llmhost.testbed import Testbed
from llmhost.testmodels import write_tiny_gguf

DEMO_MODEL = "tiny-llama"


def demo_catalog(testbed: Testbed) -> Path:
    """The demo's catalog directory, with the model file written (unmirrored) if new."""
    root = testbed.root / "demo"
    weights = root / "weights" / f"{DEMO_MODEL}.gguf"
    if not weights.exists():
        write_tiny_gguf(weights)
    catalog = root / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    entry = catalog / f"{DEMO_MODEL}.toml"
    if not entry.exists():
        source = {"kind": "local", "path": str(weights.parent)}
        entry.write_text(model_toml(DEMO_MODEL, "gguf", source, [(weights.name, weights)]))
    return catalog


def mirror_demo_model(testbed: Testbed, catalog: Path) -> str:
    """Push the demo model to the first testbed host's registry; returns its digest."""
    registry = f"{testbed.hosts()[0].address}:5000"
    access = RegistryAccess.from_secrets(registry, testbed.root / "secrets")
    return mirror(find(DEMO_MODEL, catalog), access)
