"""The artifact's manifest: which files it holds, under which safe relative paths.

An artifact is one OCI image manifest with one layer per file: the layer's
digest and size say which blob holds the file, its title annotation where the
file goes in the model directory. Titles come from the registry, so a hostile
or broken artifact could name a path outside the model directory; every such
title is refused here, before anything is downloaded or written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llmhost.onhost.layout import MANIFEST_FILE
from llmhost.onhost.pull.errors import IntegrityError
from llmhost.onhost.pull.request import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
TITLE_ANNOTATION = "org.opencontainers.image.title"
# distribution refuses manifests over 4 MiB; anything bigger is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Layer:
    """One file of the artifact: where it goes in the model dir and which blob holds it."""

    title: str
    digest: str
    size: int


def sha256_of(data: bytes) -> str:
    """The digest of ``data`` in the form manifests use: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unsafe_title_reason(title: object) -> str | None:
    """Why a layer title cannot be used as a path inside the model dir, or None if it can.

    Titles come from the registry, so a hostile or broken artifact could name
    ``../../etc/cron.d/x``; every form of escape is refused, not normalised.
    """
    if not isinstance(title, str) or not title:
        return "it is missing or empty"
    if "\\" in title:
        return "it contains a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in title):
        return "it contains a control character (a newline, a tab, a NUL byte...)"
    if title.startswith("/"):
        return "it is an absolute path"
    segments = title.split("/")
    if "" in segments:
        return "it has an empty path segment"
    if ".." in segments:
        return "it contains '..'"
    if "." in segments:
        return "it contains a '.' segment"
    if title == MANIFEST_FILE:
        return f"{MANIFEST_FILE} is reserved for the manifest"
    return None


def _parse_layer(index: int, raw: object, source: str) -> Layer:
    """Validate one manifest layer into a Layer, naming it in any error."""
    where = f"manifest from {source}: layer {index}"
    if not isinstance(raw, dict):
        raise IntegrityError(f"{where} is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise IntegrityError(f"{where} has digest {digest!r}; only sha256 digests are supported")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise IntegrityError(f"{where} ({digest}) has an invalid size {size!r}")
    annotations = raw.get("annotations")
    title = annotations.get(TITLE_ANNOTATION) if isinstance(annotations, dict) else None
    reason = unsafe_title_reason(title)
    if reason:
        raise IntegrityError(
            f"{where} ({digest}) has unsafe title {title!r}: {reason}; refusing to write "
            "outside the model directory. Fix: re-push the artifact with relative file "
            "paths such as 'tokenizer/vocab.txt'",
            digest=digest,
        )
    assert isinstance(title, str)
    return Layer(title, digest, size)


def _check_layout(layers: list[Layer], source: str) -> None:
    """Refuse titles that collide (same path twice, or a file where a directory must be)."""
    files = [layer.title for layer in layers]
    seen: set[str] = set()
    for title in files:
        if title in seen:
            raise IntegrityError(f"manifest from {source} has two layers titled {title!r}")
        seen.add(title)
    dirs = {"/".join(t.split("/")[:n]) for t in files for n in range(1, t.count("/") + 1)}
    clash = sorted(seen & dirs)
    if clash:
        raise IntegrityError(
            f"manifest from {source} uses {clash[0]!r} both as a file and as a directory"
        )


def parse_manifest(body: bytes, *, source: str) -> list[Layer]:
    """The files of an image manifest, each with a safe relative path.

    Call this only on bytes whose sha256 was checked against the digest asked for.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"manifest from {source} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"manifest from {source} is not a JSON object")
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        raise IntegrityError(
            f"the digest from {source} names an image index, not a manifest. "
            "Fix: pass the digest of the artifact's manifest itself"
        )
    if doc.get("schemaVersion") != 2 or not isinstance(doc.get("layers"), list):
        raise IntegrityError(f"manifest from {source} is not a schema 2 manifest with layers")
    if not doc["layers"]:
        raise IntegrityError(f"manifest from {source} has no layers: there is nothing to pull")
    layers = [_parse_layer(i, raw, source) for i, raw in enumerate(doc["layers"])]
    _check_layout(layers, source)
    return layers
