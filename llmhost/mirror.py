"""Mirror catalog models into the internal OCI registry, and keep registries in step.

``mirror`` takes a model's files from its pinned source (a Hugging Face commit or
a local directory), checks every byte against the catalog, and pushes them with
oras as one OCI artifact: one layer per file (title and sha256 annotations), a
config blob describing the model, and a manifest whose digest is written back
into the model file. Hosts then pull by that digest and nothing else.

oras-py serves for the push; what it lacks (verified, resumable pulls) comes
from ``llmhost.ocipull``, the same code hosts run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.catalog import Model, record_mirror
from llmhost.errors import ConfigError
from llmhost.secrets import (
    RegistryCredentials,
    certificate_authority,
    registry_credentials,
)

FILE_MEDIA_TYPE = "application/vnd.llmhost.model.file.v1"
CONFIG_MEDIA_TYPE = "application/vnd.llmhost.model.config.v1+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"
SHA256_ANNOTATION = "io.llmhost.file.sha256"
MODEL_ANNOTATION = "io.llmhost.model"
# Upload in chunks (PATCH) rather than one PUT: oras-py's single PUT reads the whole
# file into memory, which a 40 GB shard cannot afford.
UPLOAD_CHUNK = 64 * 1024 * 1024
HASH_READ = 1024 * 1024


@dataclass(frozen=True)
class RegistryAccess:
    """How the control machine reaches one registry: endpoint, credentials, CA."""

    endpoint: str  # host:port
    credentials: RegistryCredentials
    ca_file: Path

    @classmethod
    def from_secrets(cls, endpoint: str, secrets_dir: Path) -> RegistryAccess:
        ca = certificate_authority(secrets_dir)
        if not ca.cert_path.exists():
            raise ConfigError(
                f"no llmhost CA in {secrets_dir}",
                key="secrets_dir",
                fix="point --secrets-dir at the directory the deploy used (it holds ca/ "
                "and registry.json), or converge the registry first",
            )
        return cls(endpoint, registry_credentials(secrets_dir), ca.cert_path)

    @property
    def url(self) -> str:
        return f"https://{self.endpoint}"

    def oras(self) -> Any:
        import oras.provider

        client = oras.provider.Registry(
            hostname=self.endpoint, tls_verify=str(self.ca_file), auth_backend="basic"
        )
        client.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        return client


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_READ):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(model: Model, directory: Path) -> None:
    """Every catalog file is present in ``directory`` with its pinned size and SHA256."""
    for index, pinned in enumerate(model.files):
        path = directory / pinned.path
        key = f"files[{index}]"
        if not path.is_file():
            raise ConfigError(
                f"{pinned.path} is not in the source ({directory})",
                key=f"{key}.path",
                fix="correct the path, or the source revision that should contain it",
            )
        size = path.stat().st_size
        if size != pinned.size:
            raise ConfigError(
                f"{pinned.path} is {size} bytes in the source, the catalog pins {pinned.size}",
                key=f"{key}.size",
                fix="pin the size of the file you mean to serve (and its sha256)",
            )
        actual = sha256_of(path)
        if actual != pinned.sha256:
            raise ConfigError(
                f"{pinned.path} has sha256 {actual} in the source, the catalog pins "
                f"{pinned.sha256}",
                key=f"{key}.sha256",
                fix="the source changed or the pin is wrong: check where the file came from "
                "before pinning a new hash",
            )


def fetch_source(model: Model, workdir: Path, hf_endpoint: str | None = None) -> Path:
    """A directory holding the model's files, straight from its pinned source."""
    if model.source.kind == "local":
        directory = model.source.local_directory()
        if not directory.is_dir():
            raise ConfigError(
                f"{directory} does not exist", key="source.path", fix="give the model's directory"
            )
        return directory
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    assert model.source.repo and model.source.revision
    try:
        return Path(
            snapshot_download(
                repo_id=model.source.repo,
                revision=model.source.revision,
                allow_patterns=[f.path for f in model.files],
                cache_dir=workdir / "hf-cache",
                endpoint=hf_endpoint or os.environ.get("HF_ENDPOINT"),
            )
        )
    except RevisionNotFoundError as error:
        raise ConfigError(
            f"revision {model.source.revision} is not in {model.source.repo}",
            key="source.revision",
            fix="pin a commit id that exists in the repository",
        ) from error
    except RepositoryNotFoundError as error:
        raise ConfigError(
            f"repository {model.source.repo} does not exist or is not visible",
            key="source.repo",
            fix="correct the name, or set HF_TOKEN for a gated repository",
        ) from error


def config_blob(model: Model) -> bytes:
    """What the artifact is, in canonical JSON (so the same model gives the same digest)."""
    document = {
        "name": model.name,
        "format": model.format,
        "license": model.license,
        "min_hardware": model.min_hardware,
        "runtimes": list(model.runtimes),
        "source": {
            key: value
            for key, value in (
                ("kind", model.source.kind),
                ("repo", model.source.repo),
                ("revision", model.source.revision),
            )
            if value
        },
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in model.files],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def push(model: Model, directory: Path, access: RegistryAccess) -> str:
    """Push the verified files as one artifact; returns the manifest digest."""
    config = config_blob(model)
    tag = "sha-" + hashlib.sha256(config).hexdigest()[:16]
    with tempfile.TemporaryDirectory(prefix="llmhost-push-") as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_bytes(config)
        annotations = {
            str(directory / f.path): {TITLE_ANNOTATION: f.path, SHA256_ANNOTATION: f.sha256}
            for f in model.files
        }
        annotation_path = Path(scratch) / "annotations.json"
        annotation_path.write_text(json.dumps(annotations))
        for number, pinned in enumerate(model.files, 1):
            print(f"push: [{number}/{len(model.files)}] {pinned.path} ({pinned.size} bytes)",
                  file=sys.stderr)  # fmt: skip
        response = access.oras().push(
            target=f"{access.endpoint}/{model.repository}:{tag}",
            files=[f"{directory / f.path}:{FILE_MEDIA_TYPE}" for f in model.files],
            disable_path_validation=True,
            manifest_config=f"{config_path}:{CONFIG_MEDIA_TYPE}",
            annotation_file=str(annotation_path),
            manifest_annotations={MODEL_ANNOTATION: model.name},
            do_chunked=True,
            chunk_size=UPLOAD_CHUNK,
            quiet=True,
        )
    digest = response.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        raise RuntimeError(f"registry {access.endpoint} returned no manifest digest")
    return str(digest)


def mirror(model: Model, access: RegistryAccess, hf_endpoint: str | None = None) -> str:
    """Source -> verified -> registry -> digest written into the model file."""
    with tempfile.TemporaryDirectory(prefix="llmhost-mirror-") as workdir:
        directory = fetch_source(model, Path(workdir), hf_endpoint)
        verify_files(model, directory)
        digest = push(model, directory, access)
    record_mirror(model, access.endpoint, digest)
    return digest
