"""The blob store: verified blobs by digest, and the resumable downloads that fill it.

- Blobs enter ``<store>/sha256/<hex>`` only after their sha256 is checked, so a
  blob there with the right size is trusted and never fetched again.
- Transfers go to ``<hex>.partial`` files that a later run resumes with HTTP
  Range: model weights are large and links to rented hosts drop.
- A blob that breaks mid-transfer continues from the next registry where the
  first one stopped; bytes that fail verification are deleted, never kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from llmhost.onhost.pull.errors import (
    CannotRun,
    Failure,
    HTTPStatus,
    IntegrityError,
    PullError,
    TransferError,
    Transient,
)
from llmhost.onhost.pull.manifest import Layer
from llmhost.onhost.pull.progress import Progress, human
from llmhost.onhost.pull.registry import Registry, describe_network_error

HASH_READ_SIZE = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def blob_path(store: Path, digest: str) -> Path:
    """Where a verified blob lives in the content-addressed store."""
    algorithm, _, hexdigest = digest.partition(":")
    return store / algorithm / hexdigest


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk, not only the data."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Blob:
    """One distinct blob to fetch; identical files share one (and one download)."""

    digest: str
    size: int
    titles: tuple[str, ...]

    @property
    def name(self) -> str:
        return ", ".join(self.titles)


def group_blobs(layers: Sequence[Layer]) -> list[Blob]:
    """Distinct blobs of the layers, so a digest used by two files is fetched once."""
    sizes: dict[str, int] = {}
    titles: dict[str, list[str]] = {}
    for layer in layers:
        if sizes.setdefault(layer.digest, layer.size) != layer.size:
            raise IntegrityError(
                f"manifest gives blob {layer.digest} two different sizes", digest=layer.digest
            )
        titles.setdefault(layer.digest, []).append(layer.title)
    return [Blob(d, sizes[d], tuple(titles[d])) for d in sizes]


def stored_size_ok(path: Path, size: int) -> bool:
    """A regular file of the right size in the store counts as verified."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


# --------------------------------------------------------------------------- partial files


@dataclass
class _Partial:
    """A ``.partial`` file being filled, with the running hash of its bytes."""

    file: BinaryIO
    have: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    resumed: int = 0  # bytes kept from an earlier run
    sources: list[str] = field(default_factory=list)

    def restart(self, progress: Progress) -> None:
        """Throw the bytes away and start from zero (server ignored Range, or bad range)."""
        progress.add(done=-self.have)
        self.file.seek(0)
        self.file.truncate(0)
        self.have, self.resumed, self.hasher = 0, 0, hashlib.sha256()

    def append(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.file.flush()  # what is counted is on disk for the next run to resume
        self.hasher.update(chunk)
        self.have += len(chunk)


@contextlib.contextmanager
def _open_partial(path: Path, blob: Blob) -> Iterator[BinaryIO]:
    """The blob's ``.partial``, locked so two pulls on one host never interleave writes."""
    with open(path, "a+b") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransferError(
                f"another ocipull is downloading {blob.name} ({blob.digest}) into {path}. "
                "Fix: wait for it to finish, then run again",
                digest=blob.digest,
                title=blob.name,
            ) from None
        yield file


def _hash_existing(file: BinaryIO, size: int) -> _Partial:
    """Hash what an earlier run left, in one pass, so the download can resume after it."""
    file.seek(0, os.SEEK_END)
    length = file.tell()
    partial = _Partial(file)
    if length > size:  # cannot be a prefix of this blob
        file.truncate(0)
        return partial
    file.seek(0)
    while chunk := file.read(HASH_READ_SIZE):
        partial.hasher.update(chunk)
        partial.have += len(chunk)
    partial.resumed = partial.have
    return partial


# --------------------------------------------------------------------------- fetching


class BlobFetcher:
    """Downloads blobs into the store: resume, failover, size limit, verify, atomic rename."""

    def __init__(
        self,
        registries: Sequence[Registry],
        repository: str,
        store: Path,
        chunk_size: int,
        progress: Progress,
        stop: threading.Event,
    ) -> None:
        self.registries = list(registries)
        self.repository = repository
        self.store = store
        self.chunk_size = chunk_size
        self.progress = progress
        self.stop = stop

    def fetch(self, blob: Blob) -> None:
        """Make ``<store>/sha256/<hex>`` hold the verified blob, fetching only what's missing."""
        final = blob_path(self.store, blob.digest)
        if stored_size_ok(final, blob.size):
            self.progress.add(reused=blob.size)
            return
        partial_path = final.with_name(final.name + ".partial")
        try:
            with _open_partial(partial_path, blob) as file:
                partial = _hash_existing(file, blob.size)
                self.progress.add(done=partial.have)
                try:
                    self._fill(blob, partial)
                    self._verify(blob, partial)
                except IntegrityError:
                    partial_path.unlink(missing_ok=True)
                    raise
                self.progress.add(reused=partial.resumed)
                self._commit(file, partial_path, final)
        except OSError as exc:
            raise CannotRun(
                f"cannot write {blob.name} ({blob.digest}) to {partial_path}: {exc.strerror}. "
                f"Fix: check free space and permissions of --store {self.store}",
                digest=blob.digest,
                title=blob.name,
            ) from None

    def _fill(self, blob: Blob, partial: _Partial) -> None:
        """Stream the missing bytes, moving to the next registry when one breaks."""
        errors: list[str] = []
        for registry in self.registries:
            if partial.have == blob.size:
                return
            try:
                self._stream(registry, blob, partial)
                return
            except (Transient, HTTPStatus) as exc:
                errors.append(f"{registry.url}: {exc}")
        if partial.have < blob.size:
            raise TransferError(
                f"could not download {blob.name} ({blob.digest}), have {partial.have} of "
                f"{blob.size} bytes: {'; '.join(errors)}. The partial download is kept; "
                "run again to resume",
                registry=self.registries[-1].url if self.registries else None,
                digest=blob.digest,
                title=blob.name,
            )

    def _open(self, registry: Registry, blob: Blob, partial: _Partial) -> http.client.HTTPResponse:
        """GET the blob from where the partial ends; a refused range restarts from zero."""
        path = f"/v2/{self.repository}/blobs/{blob.digest}"
        if not partial.have:
            return registry.open(path, {})
        try:
            return registry.open(path, {"Range": f"bytes={partial.have}-"})
        except HTTPStatus as exc:
            if exc.status != 416:
                raise
        partial.restart(self.progress)
        return registry.open(path, {})

    def _stream(self, registry: Registry, blob: Blob, partial: _Partial) -> None:
        with self._open(registry, blob, partial) as response:
            self._check_response(registry, blob, partial, response)
            if registry.url not in partial.sources:
                partial.sources.append(registry.url)
            self._copy(registry, blob, partial, response)

    def _check_response(
        self,
        registry: Registry,
        blob: Blob,
        partial: _Partial,
        response: http.client.HTTPResponse,
    ) -> None:
        """Line the response up with the partial: 200 restarts, 206 must start where we are."""
        if response.status == 200 and partial.have:
            partial.restart(self.progress)
        elif response.status == 206:
            match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != partial.have:
                partial.restart(self.progress)
                raise Transient(f"answered a range other than bytes={partial.have}-")
            if match.group(3) != "*" and int(match.group(3)) != blob.size:
                raise self._size_mismatch(registry, blob, int(match.group(3)))
        elif response.status != 200:
            raise Transient(f"unexpected HTTP {response.status} for a blob")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != blob.size - partial.have:
            raise self._size_mismatch(registry, blob, int(length) + partial.have)

    @staticmethod
    def _size_mismatch(registry: Registry, blob: Blob, actual: int) -> IntegrityError:
        return IntegrityError(
            f"corrupt blob in registry {registry.url}: {blob.name} is {actual} bytes there, "
            f"the manifest says {blob.size} for {blob.digest}. Fix: re-push the artifact",
            registry=registry.url,
            digest=blob.digest,
            title=blob.name,
        )

    def _copy(
        self,
        registry: Registry,
        blob: Blob,
        partial: _Partial,
        response: http.client.HTTPResponse,
    ) -> None:
        """Copy body bytes into the partial, never past the size the manifest promises."""
        while partial.have < blob.size:
            if self.stop.is_set():
                raise TransferError(
                    f"stopped before {blob.name} ({blob.digest}) was complete; the partial "
                    "download is kept for the next run",
                    digest=blob.digest,
                    title=blob.name,
                )
            want = min(self.chunk_size, blob.size - partial.have)
            try:
                chunk = response.read(want)
            except (OSError, http.client.HTTPException) as exc:
                why = describe_network_error(exc, registry.timeout)
                raise Transient(f"transfer broke at byte {partial.have}: {why}") from None
            if not chunk:
                raise Transient(f"connection closed at byte {partial.have} of {blob.size}")
            partial.append(chunk)
            self.progress.add(downloaded=len(chunk))

    @staticmethod
    def _verify(blob: Blob, partial: _Partial) -> None:
        actual = "sha256:" + partial.hasher.hexdigest()
        if partial.have == blob.size and actual == blob.digest:
            return
        where = ", ".join(partial.sources) or "unknown (bytes left by an earlier run)"
        raise IntegrityError(
            f"corrupt blob in registry {where}: {blob.name} expected {blob.digest} got {actual}. "
            "The download was deleted. Fix: have the registry operator check or re-push "
            "the artifact, then run again",
            registry=partial.sources[-1] if partial.sources else None,
            digest=blob.digest,
            title=blob.name,
        )

    @staticmethod
    def _commit(file: BinaryIO, partial_path: Path, final: Path) -> None:
        """Move the verified blob into place: durable, read-only (it is hard-linked), atomic."""
        file.flush()
        os.fsync(file.fileno())
        os.fchmod(file.fileno(), 0o444)
        os.replace(partial_path, final)
        fsync_dir(final.parent)


def fetch_all(fetcher: BlobFetcher, blobs: Sequence[Blob], jobs: int) -> list[PullError]:
    """Fetch blobs in parallel; every failure is collected so one run reports them all."""
    failures: list[PullError] = []
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ocipull")
    try:
        futures: dict[Future[None], Blob] = {pool.submit(fetcher.fetch, b): b for b in blobs}
        for future in as_completed(futures):
            try:
                future.result()
            except PullError as exc:
                failures.append(exc)
    except BaseException:
        fetcher.stop.set()  # workers stop at their next chunk; partial files stay
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return failures


# --------------------------------------------------------------------------- checks


def check_free_space(store: Path, blobs: Sequence[Blob]) -> None:
    """Fail before downloading when the store cannot hold what is missing."""
    needed = 0
    for blob in blobs:
        final = blob_path(store, blob.digest)
        if stored_size_ok(final, blob.size):
            continue
        try:
            needed += max(blob.size - final.with_name(final.name + ".partial").stat().st_size, 0)
        except FileNotFoundError:
            needed += blob.size
    free = shutil.disk_usage(store).free
    if needed > free:
        raise CannotRun(
            f"--store {store} has {human(free)} free but the pull needs {human(needed)} more. "
            "Fix: free disk space or use a bigger volume",
            failures=[Failure("store", f"needs {needed} bytes, {free} free")],
        )


def check_store(store: Path, blobs: Sequence[Blob]) -> None:
    """Every blob must be in the store at its size before the model dir is built from it."""
    for blob in blobs:
        if not stored_size_ok(blob_path(store, blob.digest), blob.size):
            raise IntegrityError(
                f"{blob.name} ({blob.digest}) is missing from --store {store} or has the wrong "
                "size. Fix: delete that store file and run again",
                digest=blob.digest,
                title=blob.name,
            )
