"""A local stand-in for the Hugging Face Hub's file-resolve endpoints, for tests only.

The test machines cannot reach huggingface.co, yet the code that fetches models
calls ``huggingface_hub`` (``snapshot_download``, ``hf_hub_download``) with a
pinned commit. ``FakeHub`` serves model repositories from local directories over
HTTP on 127.0.0.1, answering exactly the requests ``huggingface_hub`` makes, so
that code runs unchanged against it:

* ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{rev}``
  (``model_info``/``repo_info``, used when the revision is a branch name);
* ``GET /api/models/{repo_id}/tree/{rev}[/{path}]`` (``list_repo_tree``, which
  ``snapshot_download`` calls to list the files at a commit);
* ``HEAD``/``GET /{repo_id}/resolve/{rev}/{path}`` with the headers the client
  requires (``X-Repo-Commit``, ``ETag``, ``Content-Length``, plus
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS-style files) and byte ranges,
  which the client uses to resume an interrupted download.

Failures carry the hub's ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``), so the client raises its real
``RepositoryNotFoundError``, ``RevisionNotFoundError`` or
``RemoteEntryNotFoundError``.

Files are hashed the way the hub does it: a plain file's ETag is its git blob
sha1; a file with an LFS suffix (weights: ``.safetensors``, ``.gguf``, ...) is
listed with its git-lfs pointer and served with its sha256 as ETag, which is
also the name of its blob in the client's cache. The directories are indexed
when the hub starts and must not change while it runs.

Point the client at it with ``endpoint=hub.url`` (``snapshot_download``,
``hf_hub_download`` and ``HfApi`` all take it), or for a subprocess with the
``HF_ENDPOINT`` variable from ``hub.env``: ``huggingface_hub`` reads
``HF_ENDPOINT`` when it is imported, so setting it later in a running process
has no effect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
"""Branch name that resolves to a repository's pinned commit, as on the hub."""

DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".bin", ".ckpt", ".gguf", ".h5", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".pkl",
    ".pt", ".pth", ".safetensors", ".tar", ".tflite", ".zip",
)  # fmt: skip
"""Suffixes stored in git-lfs, a subset of the hub's default ``.gitattributes``."""

_COMMIT = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20


def _git_blob_sha1(data: bytes) -> str:
    """The object id git gives a blob: sha1 over a ``blob <size>\\0`` header and the data."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer git stores in place of a large file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True)
class ServedFile:
    """One file of a served repository, with the hashes the hub reports for it."""

    path: str
    """POSIX path inside the repository."""
    source: Path
    size: int
    oid: str
    """Git blob id: of the content, or of the LFS pointer for an LFS file."""
    sha256: str | None
    """Content sha256 for an LFS file; None for a file stored in git."""
    pointer_size: int | None

    @property
    def etag(self) -> str:
        """What ``huggingface_hub`` keys its cache on: sha256 for LFS, else the git oid."""
        return self.sha256 if self.sha256 is not None else self.oid

    def tree_entry(self) -> dict[str, Any]:
        """This file as ``GET /api/models/{repo}/tree/{rev}`` lists it."""
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size}
        if self.sha256 is not None:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        entry["path"] = self.path
        return entry


@dataclass(frozen=True)
class ServedRepo:
    """A served repository: one commit of one directory's files."""

    repo_id: str
    commit: str
    files: dict[str, ServedFile]

    def resolves(self, revision: str) -> bool:
        """True for the pinned commit and for the default branch that points at it."""
        return revision in (self.commit, DEFAULT_BRANCH)

    def folders(self) -> list[str]:
        """Every directory that holds a file, as the tree listing shows them."""
        found: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(found)

    def folder_oid(self, folder: str) -> str:
        """A stable stand-in for a folder's git tree id (derived from what it holds)."""
        below = "".join(
            f"{f.path} {f.oid}\n" for f in self.files.values() if _under(f.path, folder)
        )
        return hashlib.sha1(f"tree {folder}\n{below}".encode()).hexdigest()

    def tree(self, folder: str, *, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries below ``folder`` ("" is the root), or None if there is no such folder."""
        folders = self.folders()
        if folder and folder not in folders:
            return None
        entries: list[dict[str, Any]] = []
        for sub in folders:
            if _under(sub, folder) and (recursive or _parent(sub) == folder):
                entries.append(
                    {"type": "directory", "oid": self.folder_oid(sub), "size": 0, "path": sub}
                )
        for path, served in self.files.items():
            if _under(path, folder) and (recursive or _parent(path) == folder):
                entries.append(served.tree_entry())
        return sorted(entries, key=lambda entry: str(entry["path"]))

    def info(self, *, blobs: bool) -> dict[str, Any]:
        """The repository as ``model_info``/``repo_info`` reads it."""
        siblings: list[dict[str, Any]] = []
        for served in self.files.values():
            sibling: dict[str, Any] = {"rfilename": served.path}
            if blobs:
                sibling |= {"size": served.size, "blobId": served.oid}
                if served.sha256 is not None:
                    sibling["lfs"] = {
                        "sha256": served.sha256,
                        "size": served.size,
                        "pointerSize": served.pointer_size,
                    }
            siblings.append(sibling)
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        return {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": author,
            "sha": self.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }


def _under(path: str, folder: str) -> bool:
    return not folder or path.startswith(folder + "/")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def index_repo(
    repo_id: str,
    commit: str,
    directory: Path,
    *,
    lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
) -> ServedRepo:
    """Hash every regular file under ``directory`` into a ``ServedRepo`` at ``commit``.

    Files are read once here so that the listing, the headers and the served
    bytes agree for as long as the directory is left alone.
    """
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"revision for {repo_id} must be a 40-hex commit id, got {commit!r}")
    if not directory.is_dir():
        raise ValueError(f"directory for {repo_id} does not exist: {directory}")
    suffixes = tuple(s.lower() for s in lfs_suffixes)
    files: dict[str, ServedFile] = {}
    for source in sorted(p for p in directory.rglob("*") if p.is_file()):
        path = source.relative_to(directory).as_posix()
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1()
        size = source.stat().st_size
        sha1.update(b"blob %d\0" % size)
        with source.open("rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                sha256.update(chunk)
                sha1.update(chunk)
        if path.lower().endswith(suffixes):
            pointer = _lfs_pointer(sha256.hexdigest(), size)
            files[path] = ServedFile(
                path, source, size, _git_blob_sha1(pointer), sha256.hexdigest(), len(pointer)
            )
        else:
            files[path] = ServedFile(path, source, size, sha1.hexdigest(), None, None)
    return ServedRepo(repo_id, commit, files)


class _HubError(Exception):
    """A 404 the hub would answer, with its ``X-Error-Code``."""

    def __init__(self, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.commit = commit


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repos: Mapping[str, ServedRepo], log: list[str]) -> None:
        self.repos = repos
        self.log = log
        self.log_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 closes each connection after its response, so no handler thread
    # lingers on an idle keep-alive connection when the hub stops.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fakehub %s: " + format, self.address_string(), *args)

    def _answer(self, *, body: bool) -> None:
        with self.server.log_lock:
            self.server.log.append(f"{self.command} {self.path}")
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if segments[:2] == ["api", "models"]:
                self._api(segments[2:], query, body=body)
            else:
                self._resolve(segments, body=body)
        except _HubError as error:
            self._error(error, body=body)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("fakehub: client went away during %s %s", self.command, self.path)

    def _repo(self, segments: list[str], markers: tuple[str, ...]) -> tuple[ServedRepo, list[str]]:
        """Split ``namespace/name/rest`` or ``name/rest`` into a known repo and the rest.

        Repo ids have one or two segments; the one followed by a marker (e.g.
        ``resolve``) or ending the path is the repo id.
        """
        for width in (2, 1):
            head, rest = segments[:width], segments[width:]
            if len(head) == width and (not rest or rest[0] in markers):
                repo = self.server.repos.get("/".join(head))
                if repo is not None:
                    return repo, rest
        raise _HubError("RepoNotFound", "Repository not found")

    def _revision(self, repo: ServedRepo, revision: str) -> None:
        if not repo.resolves(revision):
            raise _HubError("RevisionNotFound", f"Invalid rev id: {revision}")

    def _api(self, segments: list[str], query: dict[str, str], *, body: bool) -> None:
        repo, rest = self._repo(segments, ("revision", "tree"))
        truthy = ("1", "true", "True")
        if not rest or rest[0] == "revision":
            self._revision(repo, rest[1] if len(rest) > 1 else DEFAULT_BRANCH)
            if len(rest) > 2:
                raise _HubError("EntryNotFound", "Entry not found", repo.commit)
            self._json(repo.info(blobs=query.get("blobs") in truthy), body=body)
            return
        if len(rest) < 2:  # "tree" without a revision
            raise _HubError("RevisionNotFound", "Invalid rev id: ")
        self._revision(repo, rest[1])
        folder = "/".join(rest[2:]).strip("/")
        entries = repo.tree(folder, recursive=query.get("recursive") in truthy)
        if entries is None:
            raise _HubError("EntryNotFound", f"{folder} does not exist on {rest[1]}", repo.commit)
        self._json(entries, body=body)

    def _resolve(self, segments: list[str], *, body: bool) -> None:
        repo, rest = self._repo(segments, ("resolve",))
        if len(rest) < 3:
            raise _HubError("EntryNotFound", "Entry not found", repo.commit)
        self._revision(repo, rest[1])
        served = repo.files.get("/".join(rest[2:]))
        if served is None:
            raise _HubError("EntryNotFound", "Entry not found", repo.commit)
        self._file(repo, served, body=body)

    def _file(self, repo: ServedRepo, served: ServedFile, *, body: bool) -> None:
        size = served.size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        requested = self.headers.get("Range")
        if requested is not None:
            byte_range = _parse_range(requested, size)
            if byte_range is None:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = byte_range
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{served.etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if served.sha256 is not None:
            self.send_header("X-Linked-Etag", f'"{served.sha256}"')
            self.send_header("X-Linked-Size", str(size))
        if status is HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with served.source.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break  # the file shrank after indexing; the client sees a short body
                self.wfile.write(chunk)
                left -= len(chunk)

    def _json(self, value: Any, *, body: bool) -> None:
        data = json.dumps(value).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, error: _HubError, *, body: bool) -> None:
        data = json.dumps({"error": error.message}).encode()
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Error-Code", error.code)
        # The message may echo the request; keep it to printable ASCII so it
        # can neither break header encoding nor inject a header.
        safe = "".join(c if " " <= c <= "~" else "?" for c in error.message)
        self.send_header("X-Error-Message", safe)
        if error.commit is not None:
            # The hub names the commit on a missing file; the client caches the miss under it.
            self.send_header("X-Repo-Commit", error.commit)
        self.end_headers()
        if body:
            self.wfile.write(data)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse one ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` range; None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return None
    return start, end


class FakeHub:
    """Serve local directories as Hugging Face model repositories on 127.0.0.1.

    ``repos`` maps a repo id (``"org/name"``) to its pinned commit (40 hex
    digits) and the directory holding its files. The pinned commit and the
    branch ``main`` resolve; any other revision is ``RevisionNotFound``.

    Use it as a context manager; ``url`` is the endpoint to pass as
    ``endpoint=``, ``env`` the variables for a subprocess, and ``requests`` the
    ``"METHOD /path"`` lines served so far (to assert what the client asked).
    """

    def __init__(
        self,
        repos: Mapping[str, tuple[str, Path]],
        *,
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
    ) -> None:
        self._sources = dict(repos)
        self._lfs_suffixes = tuple(lfs_suffixes)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running hub (an ephemeral port)."""
        if self._server is None:
            raise RuntimeError("FakeHub is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def env(self) -> dict[str, str]:
        """Variables that point a new ``huggingface_hub`` process at this hub, online."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def start(self) -> FakeHub:
        """Index the directories and serve them from a background thread."""
        if self._server is not None:
            raise RuntimeError("FakeHub is already running")
        repos = {
            repo_id: index_repo(repo_id, commit, Path(directory), lfs_suffixes=self._lfs_suffixes)
            for repo_id, (commit, directory) in self._sources.items()
        }
        self._server = _Server(repos, self.requests)
        # A short poll interval lets ``stop`` return promptly (the default is 0.5 s).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
