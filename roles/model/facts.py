"""Facts the model role decides on: what is materialised, and room to put more."""

from __future__ import annotations

import re
import shlex
from typing import TypedDict

from pyinfra.api import FactBase

from llmhost.onhost.layout import MANIFEST_FILE

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MaterialisedDict(TypedDict):
    manifest: str | None  # sha256 digest of the manifest the directory was built from
    files: dict[str, int]  # relative path -> size


class MaterialisedModel(FactBase[MaterialisedDict]):
    """What a model directory holds: the manifest it was built from, and its files' sizes.

    The puller writes the manifest before renaming the directory into place, so
    a directory that exists was complete; the sizes catch a file deleted or
    truncated since.
    """

    def command(self, directory: str) -> str:
        manifest = shlex.quote(MANIFEST_FILE)
        return (
            f"cd {shlex.quote(directory)} 2>/dev/null || exit 0; "
            f"test -f {manifest} && sha256sum {manifest} | cut -c1-64; "
            f"find . -type f ! -path ./{manifest} -printf '%s %P\\n'"
        )

    @staticmethod
    def default() -> MaterialisedDict:
        return {"manifest": None, "files": {}}

    def process(self, output: list[str]) -> MaterialisedDict:
        result = self.default()
        for line in output:
            size, _, path = line.partition(" ")
            if SHA256_HEX.fullmatch(line):
                result["manifest"] = f"sha256:{line}"
            elif size.isdigit() and path:
                result["files"][path] = int(size)
            # Anything else is part of a name with a newline in it: such a directory does
            # not match its manifest, and the puller refuses such names.
        return result


class StoredBlobs(FactBase[set[str]]):
    """sha256 hex digests of the verified blobs in the store."""

    def command(self, store: str) -> str:
        return f"ls -1 {shlex.quote(store + '/sha256')} 2>/dev/null || true"

    @staticmethod
    def default() -> set[str]:
        return set()

    def process(self, output: list[str]) -> set[str]:
        return {name for name in output if len(name) == 64}


class FreeBytes(FactBase[int | None]):
    """Bytes available to unprivileged writers on the filesystem holding ``path``."""

    def command(self, path: str) -> str:
        return f"df -B1 --output=avail {shlex.quote(path)} | tail -n 1"

    def process(self, output: list[str]) -> int | None:
        value = "".join(output).strip()
        return int(value) if value.isdigit() else None
