"""Mirror catalog models into the internal OCI registry, and keep registries in step.

``mirror`` takes a model's files from its pinned source (a Hugging Face commit or
a local directory), checks every byte against the catalog, and pushes them with
oras as one OCI artifact: one layer per file (title and sha256 annotations), a
config blob describing the model, and a manifest whose digest is written back
into the model file. Hosts then pull by that digest and nothing else.

oras-py serves for the push; what it lacks (verified, resumable pulls) comes
from ``llmhost.onhost.pull``, the same code hosts run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.catalog import Model, ModelFile, record_mirror
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
DEFAULT_HF_ENDPOINT = "https://huggingface.co"  # huggingface_hub's own default


def hub_endpoint(explicit: str | None = None) -> str:
    """The Hugging Face hub `models mirror` downloads from: --hf-endpoint, HF_ENDPOINT, the hub."""
    return explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT


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
        # Send credentials up front: answered with 401 only after a 64 MiB chunk, an upload
        # is cut off mid-body by the registry closing the connection.
        token = base64.b64encode(
            f"{self.credentials.username}:{self.credentials.password}".encode()
        ).decode()
        client.set_header("Authorization", f"Basic {token}")
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
                endpoint=hub_endpoint(hf_endpoint),
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
    return push_artifact(
        access,
        repository=model.repository,
        name=model.name,
        directory=directory,
        files=model.files,
        config=config_blob(model),
        config_media_type=CONFIG_MEDIA_TYPE,
    )


def push_artifact(
    access: RegistryAccess,
    *,
    repository: str,
    name: str,
    directory: Path,
    files: Sequence[ModelFile],
    config: bytes,
    config_media_type: str,
) -> str:
    """Push files (already checked against their sha256) as one OCI artifact.

    One layer per file with its path and sha256 as annotations, ``config`` as the
    config blob; tagged by the config's hash so a re-push of the same content is
    the same tag. Returns the manifest digest.
    """
    tag = "sha-" + hashlib.sha256(config).hexdigest()[:16]
    with tempfile.TemporaryDirectory(prefix="llmhost-push-") as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_bytes(config)
        annotations = {
            str(directory / f.path): {TITLE_ANNOTATION: f.path, SHA256_ANNOTATION: f.sha256}
            for f in files
        }
        annotation_path = Path(scratch) / "annotations.json"
        annotation_path.write_text(json.dumps(annotations))
        for number, pinned in enumerate(files, 1):
            print(f"push: [{number}/{len(files)}] {pinned.path} ({pinned.size} bytes)",
                  file=sys.stderr)  # fmt: skip
        response = access.oras().push(
            target=f"{access.endpoint}/{repository}:{tag}",
            files=[f"{directory / f.path}:{FILE_MEDIA_TYPE}" for f in files],
            disable_path_validation=True,
            manifest_config=f"{config_path}:{config_media_type}",
            annotation_file=str(annotation_path),
            manifest_annotations={MODEL_ANNOTATION: name},
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


def _pull_request(model: Model, access: RegistryAccess, workdir: Path) -> Any:
    from llmhost.onhost.pull.request import Credentials, PullRequest

    assert model.digest
    return PullRequest(
        registries=(access.url,),
        repository=model.repository,
        digest=model.digest,
        store=workdir / "store",
        dest=workdir / "model",
        credentials=Credentials(access.credentials.username, access.credentials.password),
        ca_file=access.ca_file,
    )


def require_digest(model: Model) -> str:
    if not model.digest:
        raise ConfigError(
            f"model {model.name} has no OCI digest",
            key="oci.digest",
            fix=f"mirror it first: llmhost models mirror {model.name}",
        )
    return model.digest


def verify(model: Model, access: RegistryAccess) -> int:
    """Fetch the artifact by digest and check manifest, every blob and the catalog pins.

    Returns the bytes verified. Raises ``llmhost.onhost.pull.errors.PullError`` naming
    what is wrong.
    """
    from llmhost.onhost.pull import pull

    require_digest(model)
    with tempfile.TemporaryDirectory(prefix="llmhost-verify-") as workdir:
        result = pull(_pull_request(model, access, Path(workdir)))
        verify_files(model, Path(workdir) / "model")
    return sum(layer.size for layer in result.files)


def sync(model: Model, source: RegistryAccess, target: RegistryAccess) -> str:
    """Copy the artifact from ``source`` to ``target`` by digest, verified on both ends.

    Blobs are pulled and hashed from the source, uploaded (skipped when the target
    already has them: a registry never overwrites a blob), and the manifest is put
    as the exact bytes it was, so the digest on the target is the digest the
    catalog pins. The target is then read back in full, so a blob it already had
    but holds corrupt fails the sync instead of passing unseen.
    """
    digest = require_digest(model)
    with tempfile.TemporaryDirectory(prefix="llmhost-sync-") as scratch:
        workdir = Path(scratch)
        from llmhost.onhost.layout import MANIFEST_FILE
        from llmhost.onhost.pull import pull
        from llmhost.onhost.pull.blobs import blob_path

        result = pull(_pull_request(model, source, workdir))
        manifest_bytes = (workdir / "model" / MANIFEST_FILE).read_bytes()
        manifest = json.loads(manifest_bytes)
        source_client, target_client = source.oras(), target.oras()
        container = target_client.get_container(f"{target.endpoint}/{model.repository}")
        config = manifest["config"]
        config_path = workdir / "config.blob"
        config_path.write_bytes(_fetch_verified_blob(source_client, source, model, config))
        uploads = [(config_path, config)] + [
            (blob_path(workdir / "store", layer.digest), descriptor)
            for layer, descriptor in zip(result.files, manifest["layers"], strict=True)
        ]
        for path, descriptor in uploads:
            response = target_client.upload_blob(
                str(path), container, descriptor, do_chunked=True, chunk_size=UPLOAD_CHUNK
            )
            if response.status_code not in (200, 201, 202):
                raise RuntimeError(f"{target.endpoint} refused blob {descriptor['digest']}")
        tag = "sha-" + config["digest"].split(":", 1)[1][:16]
        for reference in (digest, tag):
            put = target_client.do_request(
                f"{target.url}/v2/{model.repository}/manifests/{reference}",
                "PUT",
                data=manifest_bytes,
                headers={**target_client.headers, "Content-Type": manifest["mediaType"]},
            )
            if put.status_code not in (200, 201):
                raise RuntimeError(f"{target.endpoint} refused the manifest: {put.text[:300]}")
            if put.headers.get("Docker-Content-Digest") != digest:
                raise RuntimeError(f"{target.endpoint} stored the manifest under another digest")
    verify(model, target)
    return digest


def _fetch_verified_blob(
    client: Any, access: RegistryAccess, model: Model, descriptor: Any
) -> bytes:
    response = client.do_request(
        f"{access.url}/v2/{model.repository}/blobs/{descriptor['digest']}",
        "GET",
        headers=dict(client.headers),
    )
    body = bytes(response.content)
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if response.status_code != 200 or actual != descriptor["digest"]:
        raise RuntimeError(
            f"{access.endpoint}: blob {descriptor['digest']} came back as {actual} "
            f"(HTTP {response.status_code})"
        )
    return body
