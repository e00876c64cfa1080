"""Facts the model role decides on: what is materialised, and room to put more."""

from __future__ import annotations

from pyinfra.api import FactBase

from llmhost.ocipull import MANIFEST_FILE


class MaterialisedManifest(FactBase[str | None]):
    """sha256 digest of the manifest a model directory was built from, or None.

    The puller writes the manifest into the directory last-but-one, before the
    atomic rename, so a directory that exists is complete.
    """

    def command(self, directory: str) -> str:
        return (
            f"test -f {directory}/{MANIFEST_FILE} && "
            f"sha256sum {directory}/{MANIFEST_FILE} | cut -d' ' -f1 || true"
        )

    def process(self, output: list[str]) -> str | None:
        value = "".join(output).strip()
        return f"sha256:{value}" if len(value) == 64 else None


class FreeBytes(FactBase[int | None]):
    """Bytes available to unprivileged writers on the filesystem holding ``path``."""

    def command(self, path: str) -> str:
        return f"df -B1 --output=avail {path} | tail -n 1"

    def process(self, output: list[str]) -> int | None:
        value = "".join(output).strip()
        return int(value) if value.isdigit() else None
