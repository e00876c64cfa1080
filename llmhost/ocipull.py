"""Pull an OCI artifact (a model) by manifest digest: verified, resumable, atomic.

This file is copied to hosts and run there as ``python3 ocipull.py ...``. Hosts
have only python3, so it uses the standard library alone: no llmhost imports,
no third-party packages. Keep it that way.

Why it is built this way:

- Everything is addressed by sha256 and checked before use, so a blob from the
  disaster-recovery registry is as good as one from the primary (same digest,
  same bytes) and a tampered or corrupt registry cannot slip bytes in.
- Blobs enter ``<store>/sha256/<hex>`` only after verification, so a blob there
  with the right size is trusted and never fetched again.
- Transfers go to ``<hex>.partial`` files that a later run resumes with HTTP
  Range: model weights are large and links to rented hosts drop.
- The model directory is built beside its destination from hard links and
  renamed into place, so a serving process never sees a half-written model and
  the weights take disk space once however many models share them.

Exit codes: 0 done, 1 failed (verification or transfer), 2 cannot run (bad
arguments, no registry reachable, credentials refused, unknown digest).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
TITLE_ANNOTATION = "org.opencontainers.image.title"
MANIFEST_FILE = ".llmhost-manifest.json"
# distribution refuses manifests over 4 MiB; anything bigger is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# 64 KiB: read, hash and write while the chunk is still in the CPU's cache. Measured on
# the testbed against curl: 1 MiB chunks cost up to a second more system time per 540 MB.
DEFAULT_CHUNK_SIZE = 64 * 1024
DEFAULT_JOBS = 4
DEFAULT_TIMEOUT = 60.0
HASH_READ_SIZE = 1024 * 1024

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


# --------------------------------------------------------------------------- errors


@dataclass
class Failure:
    """One thing that went wrong, in the JSON result, so automation can act on it."""

    stage: str  # "arguments", "manifest", "blob", "store" or "materialise"
    error: str
    registry: str | None = None
    digest: str | None = None
    title: str | None = None


class PullError(Exception):
    """A pull that did not complete. The message says what is wrong and what to do.

    ``result`` carries what was done before the failure (bytes downloaded,
    failures per blob) so the CLI can still print its JSON result.
    """

    exit_code = EXIT_FAILED
    stage = "blob"

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        digest: str | None = None,
        title: str | None = None,
        stage: str | None = None,
        failures: list[Failure] | None = None,
    ) -> None:
        super().__init__(message)
        where = stage or self.stage
        self.failures = failures or [Failure(where, message, registry, digest, title)]
        self.result: PullResult | None = None


class CannotRun(PullError):
    """Nothing can be pulled as asked: fix the arguments, credentials or network first."""

    exit_code = EXIT_CANNOT_RUN
    stage = "arguments"


class IntegrityError(PullError):
    """The registry served bytes that are not what the digest promises; nothing is used."""

    stage = "blob"


class TransferError(PullError):
    """A transfer broke; whatever arrived is kept as a ``.partial`` for the next run."""

    stage = "blob"


class _Transient(Exception):
    """This registry failed for now (network, timeout, 5xx): try the next one."""


class _HTTPStatus(Exception):
    """A definite HTTP answer (401, 403, 404, ...) that retrying elsewhere won't change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}{f' ({detail})' if detail else ''}")
        self.status = status
        self.detail = detail


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Credentials:
    """Registry login. Read from a file so the password never appears in argv or ps."""

    username: str
    password: str = field(repr=False)
    source: str = "the auth file"

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True)
class PullRequest:
    """What to pull and where to put it (the Python form of the CLI arguments)."""

    registries: tuple[str, ...]
    repository: str
    digest: str
    store: Path
    dest: Path
    credentials: Credentials | None = None
    ca_file: Path | None = None
    jobs: int = DEFAULT_JOBS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Layer:
    """One file of the artifact: where it goes in the model dir and which blob holds it."""

    title: str
    digest: str
    size: int


@dataclass
class PullResult:
    """Outcome of a pull; ``to_json()`` is what ``--json`` prints."""

    digest: str
    repository: str
    dest: str
    ok: bool = False
    changed: bool = False
    registry: str | None = None
    files: list[Layer] = field(default_factory=list)
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    failures: list[Failure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "registry": self.registry,
            "repository": self.repository,
            "digest": self.digest,
            "dest": self.dest,
            "files": [{"path": f.title, "digest": f.digest, "size": f.size} for f in self.files],
            "downloaded_bytes": self.downloaded_bytes,
            "reused_bytes": self.reused_bytes,
            "failures": [asdict(f) for f in self.failures],
        }


def load_credentials(path: Path) -> Credentials:
    """Read ``{"username", "password"}`` from a private file.

    A password file others can read is refused outright, as ssh does with keys:
    provisioning must not silently leave a registry secret world-readable.
    """
    fix = f"write {{'username': ..., 'password': ...}} as JSON to {path} with mode 0600"
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CannotRun(f"cannot read auth file {path}: {exc.strerror}. Fix: {fix}") from None
    if mode & 0o077:
        raise CannotRun(
            f"auth file {path} has mode {stat.S_IMODE(mode):04o} but holds a password, "
            f"so only its owner may read it. Fix: chmod 600 {path}"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # the message has a position only, never the text
        raise CannotRun(f"auth file {path} is not valid JSON ({exc.msg}). Fix: {fix}") from None
    user = data.get("username") if isinstance(data, dict) else None
    password = data.get("password") if isinstance(data, dict) else None
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        raise CannotRun(f"auth file {path} lacks a non-empty username or password. Fix: {fix}")
    return Credentials(user, password, str(path))


def build_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS context that verifies the registry: the private CA when given, else system trust.

    With ``ca_file`` only that CA is trusted, which pins the registry to the
    private CA instead of any public one.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CannotRun(
            f"cannot load CA bundle {ca_file}: {exc}. Fix: pass --ca-file the PEM file of "
            "the private CA that signed the registry's certificate"
        ) from None


def normalise_registry(url: str) -> str:
    """``scheme://host[:port]`` for a registry URL, or CannotRun saying what is wrong.

    Credentials in the URL are refused: they would be visible in argv.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise CannotRun(f"--registry {url!r} is not a valid URL ({exc})") from None
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "it must look like https://10.231.1.2:5000"
    elif parts.username or parts.password:
        problem = "it must not contain credentials; put them in --auth-file"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "it must have no path: the API is always under /v2/"
    if problem:
        raise CannotRun(f"--registry {url!r} is not usable: {problem}")
    return f"{parts.scheme}://{parts.netloc}"


def _check_request(request: PullRequest) -> tuple[str, ...]:
    """Refuse a malformed request before touching the network or the disk."""
    if not request.registries:
        raise CannotRun("no registry given. Fix: pass --registry https://HOST:PORT at least once")
    if not _DIGEST_RE.fullmatch(request.digest):
        raise CannotRun(
            f"--digest {request.digest!r} is not a manifest digest. "
            "Fix: pass sha256: followed by 64 lowercase hex digits"
        )
    if not _REPOSITORY_RE.fullmatch(request.repository):
        raise CannotRun(
            f"--repository {request.repository!r} is not a repository name "
            "(lowercase components separated by '/', e.g. models/tiny)"
        )
    if not 1 <= request.jobs <= 64:
        raise CannotRun(f"--jobs {request.jobs} is out of range 1..64")
    if not 4096 <= request.chunk_size <= 64 * 1024 * 1024:
        raise CannotRun(f"--chunk-size {request.chunk_size} is out of range 4 KiB..64 MiB")
    if request.timeout <= 0:
        raise CannotRun(f"--timeout {request.timeout} must be positive")
    if not request.dest.name or request.dest.name in (".", ".."):
        raise CannotRun(f"--dest {request.dest} must name a directory to create")
    return tuple(normalise_registry(url) for url in request.registries)


# --------------------------------------------------------------------------- manifest


def _sha256(data: bytes) -> str:
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
    if "\x00" in title:
        return "it contains a NUL byte"
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
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
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


# --------------------------------------------------------------------------- registry client


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Scheme and parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The registry's own error codes (e.g. MANIFEST_UNKNOWN) from an error body."""
    try:
        doc = json.loads(exc.read(65536) or b"{}")
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    return "; ".join(parts)


def _describe_network_error(exc: BaseException, timeout: float) -> str:
    """One line for a connection failure, with the likely fix for TLS trouble."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({reason.verify_message}); if the "
            "registry's certificate comes from the private CA, pass --ca-file with it"
        )
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow blob redirects (to storage backends) over http(s) only.

    The Authorization header is added as an "unredirected" header, so urllib
    never forwards registry credentials to the redirect target.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Auth:
    """Authorization for one registry: Basic (htpasswd) or Bearer tokens, learnt from 401s.

    Credentials are sent only after the registry asks for them, and the header
    found is then reused by every thread, so parallel blob fetches don't each
    go through the challenge or fetch their own token.
    """

    def __init__(
        self, credentials: Credentials | None, opener: urllib.request.OpenerDirector, timeout: float
    ) -> None:
        self._credentials = credentials
        self._opener = opener
        self._timeout = timeout
        self._lock = threading.Lock()
        self._header: str | None = None

    def header(self) -> str | None:
        with self._lock:
            return self._header

    def answer(self, challenge: str, sent: str | None) -> bool:
        """Update the header for a 401 challenge; True when there is something new to try."""
        scheme, params = _parse_challenge(challenge)
        with self._lock:
            if self._header != sent:
                return True  # another thread already answered the challenge
            if scheme == "basic" and self._credentials:
                new = self._credentials.basic_header()
            elif scheme == "bearer" and "realm" in params:
                new = f"Bearer {self._fetch_token(params)}"
            else:
                return False
            if new == sent:
                return False
            self._header = new
            return True

    def _fetch_token(self, params: dict[str, str]) -> str:
        """Get a token from the Bearer realm, logging in with Basic when we have credentials."""
        realm = params["realm"]
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise _HTTPStatus(401, f"token realm {realm!r} is not an http(s) URL")
        wanted: list[tuple[str, str]] = [
            (k, params[k]) for k in ("service", "scope") if k in params
        ]
        query = urllib.parse.urlencode(wanted)
        request = urllib.request.Request(f"{realm}?{query}" if query else realm)
        if self._credentials:
            request.add_unredirected_header("Authorization", self._credentials.basic_header())
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                doc = json.loads(response.read(1024 * 1024))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _HTTPStatus(exc.code, f"token service {realm} refused the login") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Transient(
                f"token service {realm}: {_describe_network_error(exc, self._timeout)}"
            ) from None
        except ValueError:
            raise _Transient(f"token service {realm} answered with something not JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise _Transient(f"token service {realm} answered without a token")
        return token


class Registry:
    """HTTP access to one registry: auth, redirects, TLS and error classification.

    Errors come out as three kinds so failover can decide: ``_Transient`` (try
    the next registry), ``_HTTPStatus`` (a definite answer) or a response.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        ssl_context: ssl.SSLContext,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.timeout = timeout
        # No ProxyHandler: the registry is internal, and a stray http_proxy must
        # not route model pulls (or credentials) through another machine.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl_context),
            _RedirectHandler(),
        )
        self._auth = _Auth(credentials, self._opener, timeout)

    def open(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """GET ``path``, answering one auth challenge; the caller closes the response."""
        sent = self._auth.header()
        for attempt in (1, 2):
            request = urllib.request.Request(self.url + path, headers=headers)
            if sent:
                request.add_unredirected_header("Authorization", sent)
            try:
                response: http.client.HTTPResponse = self._opener.open(
                    request, timeout=self.timeout
                )
                return response
            except urllib.error.HTTPError as exc:
                try:
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    if exc.code == 401 and attempt == 1 and self._auth.answer(challenge, sent):
                        sent = self._auth.header()
                        continue
                    raise self._classify(exc) from None
                finally:
                    exc.close()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise _Transient(_describe_network_error(exc, self.timeout)) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    def _classify(exc: urllib.error.HTTPError) -> Exception:
        detail = _error_detail(exc)
        if exc.code >= 500 or exc.code in (408, 429):
            return _Transient(f"HTTP {exc.code}{f' ({detail})' if detail else ''}")
        return _HTTPStatus(exc.code, detail)

    def read_manifest(self, repository: str, digest: str) -> bytes:
        """The manifest's exact bytes (unverified: the caller checks the digest)."""
        accept = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
        with self.open(f"/v2/{repository}/manifests/{digest}", {"Accept": accept}) as response:
            try:
                body: bytes = response.read(MAX_MANIFEST_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(_describe_network_error(exc, self.timeout)) from None
        if len(body) > MAX_MANIFEST_BYTES:
            raise IntegrityError(
                f"registry {self.url} sent a manifest over {MAX_MANIFEST_BYTES} bytes "
                f"for {digest}; refusing it",
                registry=self.url,
                digest=digest,
                stage="manifest",
            )
        return body


def _manifest_refused(
    registry: Registry, exc: _HTTPStatus, repository: str, digest: str
) -> PullError:
    """Turn a definite answer about the manifest into an error saying what to fix."""
    url, detail = registry.url, f" ({exc.detail})" if exc.detail else ""
    creds = registry.credentials
    if exc.status == 401 and creds is None:
        message = (
            f"registry {url} requires a login (HTTP 401){detail}. "
            "Fix: pass --auth-file with the registry username and password"
        )
    elif exc.status == 401 and creds is not None:
        message = (
            f"registry {url} refused the credentials for user {creds.username!r} "
            f"(HTTP 401){detail}. Fix: check the username and password in {creds.source}"
        )
    elif exc.status == 403:
        message = f"registry {url} denies pulling {repository} (HTTP 403){detail}"
    elif exc.status == 404 and "NAME_UNKNOWN" in exc.detail:
        message = (
            f"registry {url} has no repository {repository} (HTTP 404){detail}. "
            "Fix: check --repository"
        )
    elif exc.status == 404:
        message = (
            f"unknown digest: registry {url} has no manifest {digest} in repository "
            f"{repository} (HTTP 404){detail}. Fix: check --digest and --repository "
            "against what was pushed"
        )
    else:
        message = f"registry {url} answered HTTP {exc.status}{detail} for manifest {digest}"
    return CannotRun(message, registry=url, digest=digest, stage="manifest")


def fetch_manifest(
    registries: Sequence[Registry], repository: str, digest: str
) -> tuple[Registry, bytes]:
    """The verified manifest bytes and the registry that served them.

    Unreachable registries (network, timeout, 5xx) hand over to the next; a
    definite answer (401, 404, wrong bytes) stops here, because the mirror
    saying something else would hide a problem someone must fix.
    """
    unreachable: list[Failure] = []
    for registry in registries:
        try:
            body = registry.read_manifest(repository, digest)
        except _Transient as exc:
            unreachable.append(Failure("manifest", f"{registry.url}: {exc}", registry.url, digest))
            continue
        except _HTTPStatus as exc:
            raise _manifest_refused(registry, exc, repository, digest) from None
        actual = _sha256(body)
        if actual != digest:
            raise IntegrityError(
                f"registry {registry.url} served manifest bytes with digest {actual} for "
                f"{digest}; refusing them. Fix: check the registry's storage, re-push the artifact",
                registry=registry.url,
                digest=digest,
                stage="manifest",
            )
        return registry, body
    lines = "\n  ".join(f.error for f in unreachable)
    raise CannotRun(
        f"no registry reachable for {repository}@{digest}:\n  {lines}\n"
        "Fix: check the network path and that the registry service runs",
        failures=unreachable,
    )


# --------------------------------------------------------------------------- progress


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _clock_text(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Byte counters for a pull, and when given a stream, a progress report.

    Weight pulls take minutes to hours; rate and ETA let an operator tell slow
    from stuck. On a terminal it is one line rewritten in place; in logs, a
    plain line every few seconds so they don't fill with carriage returns.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool = False,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream, self._live, self._clock = stream, live, clock
        self._interval = interval if interval is not None else (0.2 if live else 5.0)
        self._lock = threading.Lock()
        self._started = self._last = clock()
        self._width = 0
        self.total = self.done = self.downloaded = self.reused = 0

    def begin(self, total: int) -> None:
        with self._lock:
            self.total, self._started = total, self._clock()
            self._last = self._started

    def add(self, *, downloaded: int = 0, reused: int = 0, done: int = 0) -> None:
        """Count bytes; ``done`` moves the bar without counting a transfer (resumed or dropped)."""
        with self._lock:
            self.downloaded += downloaded
            self.reused += reused
            self.done += done + downloaded
            now = self._clock()
            if self._stream and now - self._last >= self._interval:
                self._last = now
                self._render(now)

    def finish(self) -> None:
        with self._lock:
            if self._stream and self.total:
                self._render(self._clock())
                if self._live:
                    self._stream.write("\n")
                    self._stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.downloaded / elapsed
        left = max(self.total - self.done, 0)
        eta = _clock_text(left / rate) if rate > 0 else "?"
        percent = 100 * self.done // self.total if self.total else 100
        return (
            f"{_human(self.done)} / {_human(self.total)} ({percent}%)  {_human(rate)}/s  ETA {eta}"
        )

    def _render(self, now: float) -> None:
        assert self._stream is not None
        text = f"ocipull: {self.line(now)}"
        if self._live:
            self._width = max(self._width, len(text))
            self._stream.write("\r" + text.ljust(self._width))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


# --------------------------------------------------------------------------- blob store


def blob_path(store: Path, digest: str) -> Path:
    """Where a verified blob lives in the content-addressed store."""
    algorithm, _, hexdigest = digest.partition(":")
    return store / algorithm / hexdigest


def _fsync_dir(path: Path) -> None:
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


def _stored_size_ok(path: Path, size: int) -> bool:
    """A regular file of the right size in the store counts as verified."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


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
        if _stored_size_ok(final, blob.size):
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
            except (_Transient, _HTTPStatus) as exc:
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
        except _HTTPStatus as exc:
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
                raise _Transient(f"answered a range other than bytes={partial.have}-")
            if match.group(3) != "*" and int(match.group(3)) != blob.size:
                raise self._size_mismatch(registry, blob, int(match.group(3)))
        elif response.status != 200:
            raise _Transient(f"unexpected HTTP {response.status} for a blob")
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
                why = _describe_network_error(exc, registry.timeout)
                raise _Transient(f"transfer broke at byte {partial.have}: {why}") from None
            if not chunk:
                raise _Transient(f"connection closed at byte {partial.have} of {blob.size}")
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
        _fsync_dir(final.parent)


def _fetch_all(fetcher: BlobFetcher, blobs: Sequence[Blob], jobs: int) -> list[PullError]:
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


def _check_free_space(store: Path, blobs: Sequence[Blob]) -> None:
    """Fail before downloading when the store cannot hold what is missing."""
    needed = 0
    for blob in blobs:
        final = blob_path(store, blob.digest)
        if _stored_size_ok(final, blob.size):
            continue
        try:
            needed += max(blob.size - final.with_name(final.name + ".partial").stat().st_size, 0)
        except FileNotFoundError:
            needed += blob.size
    free = shutil.disk_usage(store).free
    if needed > free:
        raise CannotRun(
            f"--store {store} has {_human(free)} free but the pull needs {_human(needed)} more. "
            "Fix: free disk space or use a bigger volume",
            failures=[Failure("store", f"needs {needed} bytes, {free} free")],
        )


def _check_store(store: Path, blobs: Sequence[Blob]) -> None:
    """Every blob must be in the store at its size before the model dir is built from it."""
    for blob in blobs:
        if not _stored_size_ok(blob_path(store, blob.digest), blob.size):
            raise IntegrityError(
                f"{blob.name} ({blob.digest}) is missing from --store {store} or has the wrong "
                "size. Fix: delete that store file and run again",
                digest=blob.digest,
                title=blob.name,
            )


# --------------------------------------------------------------------------- model directory


def materialised_layers(dest: Path, digest: str) -> list[Layer] | None:
    """The files, when ``dest`` already holds exactly this artifact; else None.

    The manifest kept inside dest is checked against the digest, and every file
    it lists against its size, so a damaged dest gets rebuilt, not trusted.
    """
    try:
        body = (dest / MANIFEST_FILE).read_bytes()
    except OSError:
        return None
    if _sha256(body) != digest:
        return None
    try:
        layers = parse_manifest(body, source=str(dest / MANIFEST_FILE))
    except IntegrityError:
        return None
    for layer in layers:
        if not _stored_size_ok(dest.joinpath(*layer.title.split("/")), layer.size):
            return None
    return layers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _clean_stale_siblings(dest: Path) -> None:
    """Remove temp dirs left next to dest by runs that were killed."""
    pattern = glob.escape(str(dest)) + ".*-*"
    for name in glob.glob(pattern):
        kind, _, pid = name[len(str(dest)) + 1 :].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove_tree(Path(name))


def _populate(tmp: Path, body: bytes, layers: Sequence[Layer], store: Path) -> None:
    """Fill ``tmp`` with hard links to the store and the manifest itself."""
    tmp.mkdir()
    for layer in layers:
        target = tmp.joinpath(*layer.title.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob_path(store, layer.digest), target)
        except OSError as exc:
            raise CannotRun(
                f"cannot hard-link {layer.title} from --store {store} into {tmp}: {exc.strerror}. "
                "Fix: keep --store and --dest on the same filesystem",
                digest=layer.digest,
                title=layer.title,
            ) from None
    manifest = tmp / MANIFEST_FILE
    with open(manifest, "xb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    manifest.chmod(0o444)
    for directory, _, _ in os.walk(tmp):
        _fsync_dir(Path(directory))


def _swap_into_place(tmp: Path, dest: Path, digest: str) -> bool:
    """Rename the finished dir to dest; False when a concurrent run already placed it."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise CannotRun(f"--dest {dest} exists and is not a directory. Fix: move it away")
    if dest.exists():  # a damaged or foreign dir at our path: swap it out, then drop it
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        _remove_tree(old)
    else:
        try:
            os.rename(tmp, dest)
        except OSError:
            if materialised_layers(dest, digest) is None:
                raise
            _remove_tree(tmp)
            return False
    _fsync_dir(dest.parent)
    return True


def materialise(dest: Path, body: bytes, layers: Sequence[Layer], store: Path, digest: str) -> bool:
    """Build the model dir beside dest and rename it in; True when dest changed."""
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_tree(tmp)
        _populate(tmp, body, layers, store)
        return _swap_into_place(tmp, dest, digest)
    except OSError as exc:
        raise CannotRun(
            f"cannot build {dest}: {exc}. Fix: check permissions and space of its directory",
            failures=[Failure("materialise", str(exc))],
        ) from None
    finally:
        with contextlib.suppress(OSError):
            _remove_tree(tmp)


# --------------------------------------------------------------------------- pull


def pull(
    request: PullRequest,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> PullResult:
    """Pull ``request.digest`` into ``request.dest``; raise PullError (with ``.result``) if not.

    ``progress`` receives byte counts and reports them if it has a stream;
    setting ``stop`` makes the workers stop at their next chunk.
    """
    result = PullResult(request.digest, request.repository, str(request.dest))
    progress = progress or Progress()
    try:
        _pull(request, result, progress, stop or threading.Event())
    except PullError as exc:
        result.failures = exc.failures
        exc.result = result
        raise
    finally:
        result.downloaded_bytes, result.reused_bytes = progress.downloaded, progress.reused
    return result


def _pull(
    request: PullRequest, result: PullResult, progress: Progress, stop: threading.Event
) -> None:
    urls = _check_request(request)
    existing = materialised_layers(request.dest, request.digest)
    if existing is not None:  # idempotent and offline: the registry is not even asked
        result.files, result.ok = existing, True
        return
    try:
        _clean_stale_siblings(request.dest)
        (request.store / "sha256").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CannotRun(f"cannot prepare {request.store} or {request.dest}: {exc}") from None
    context = build_ssl_context(request.ca_file)
    registries = [Registry(u, request.credentials, context, request.timeout) for u in urls]
    source, body = fetch_manifest(registries, request.repository, request.digest)
    result.registry = source.url
    result.files = parse_manifest(body, source=f"registry {source.url}")
    blobs = group_blobs(result.files)
    _download(request, registries, source, blobs, progress, stop)
    _check_store(request.store, blobs)
    result.changed = materialise(request.dest, body, result.files, request.store, request.digest)
    result.ok = True


def _download(
    request: PullRequest,
    registries: Sequence[Registry],
    source: Registry,
    blobs: Sequence[Blob],
    progress: Progress,
    stop: threading.Event,
) -> None:
    """Fetch all blobs, the manifest's registry first, the others as fallback."""
    _check_free_space(request.store, blobs)
    order = [source, *(r for r in registries if r is not source)]
    fetcher = BlobFetcher(
        order, request.repository, request.store, request.chunk_size, progress, stop
    )
    missing = [b for b in blobs if not _stored_size_ok(blob_path(request.store, b.digest), b.size)]
    progress.begin(sum(b.size for b in missing))
    try:
        errors = _fetch_all(fetcher, blobs, request.jobs)
    finally:
        progress.finish()
    if errors:
        exit_code = max(e.exit_code for e in errors)
        error_type = CannotRun if exit_code == EXIT_CANNOT_RUN else PullError
        raise error_type(
            f"{len(errors)} of {len(blobs)} blobs failed:\n  " + "\n  ".join(map(str, errors)),
            failures=[f for e in errors for f in e.failures],
        )


# --------------------------------------------------------------------------- CLI


def _size_arg(text: str) -> int:
    """Bytes, optionally with a K or M suffix (binary)."""
    match = re.fullmatch(r"(\d+)\s*([kKmM]?)(?:i?[bB])?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1048576, 512K or 1M")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocipull.py",
        description="Pull an OCI artifact by manifest digest into a model directory, "
        "verified and resumable. Exit 0 done, 1 failed, 2 cannot run.",
    )
    add = parser.add_argument
    add(
        "--registry",
        action="append",
        required=True,
        metavar="URL",
        help="registry base URL; repeat in order: primary first, then DR",
    )
    add("--repository", required=True, help="repository, e.g. models/tiny")
    add("--digest", required=True, help="manifest digest, sha256:<64 hex>")
    add("--store", required=True, type=Path, help="content-addressed blob store directory")
    add("--dest", required=True, type=Path, help="model directory to create")
    add("--auth-file", type=Path, help='JSON {"username","password"}, mode 0600')
    add("--ca-file", type=Path, help="PEM CA bundle to verify the registry (default: system)")
    add("--jobs", type=int, default=DEFAULT_JOBS, help="parallel blob downloads")
    add("--chunk-size", type=_size_arg, default=DEFAULT_CHUNK_SIZE, help="read size per chunk")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT, help="network timeout, seconds")
    add(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress line (default: when stderr is a terminal; else periodic lines)",
    )
    add("--json", action="store_true", help="print the result as JSON on stdout")
    return parser


def _request_from_args(args: argparse.Namespace) -> PullRequest:
    credentials = load_credentials(args.auth_file) if args.auth_file else None
    return PullRequest(
        registries=tuple(args.registry),
        repository=args.repository,
        digest=args.digest,
        store=args.store,
        dest=args.dest,
        credentials=credentials,
        ca_file=args.ca_file,
        jobs=args.jobs,
        chunk_size=args.chunk_size,
        timeout=args.timeout,
    )


def _progress_for(choice: bool | None, stream: TextIO) -> Progress:
    if choice is False:
        return Progress()
    return Progress(stream, live=bool(choice) or stream.isatty())


def _summary(result: PullResult) -> str:
    if not result.changed:
        return f"{result.dest} already holds {result.digest}; nothing to do"
    return (
        f"{result.dest} ready: {len(result.files)} files from {result.registry}, "
        f"{_human(result.downloaded_bytes)} downloaded, {_human(result.reused_bytes)} reused"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        request = _request_from_args(args)
        result = pull(request, progress=_progress_for(args.progress, stderr))
    except PullError as exc:
        result = exc.result or PullResult(
            args.digest, args.repository, str(args.dest), failures=exc.failures
        )
        print(f"ocipull: error: {exc}", file=stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("ocipull: interrupted; partial downloads are kept for the next run", file=stderr)
        return EXIT_FAILED
    else:
        print(f"ocipull: {_summary(result)}", file=stderr)
        code = EXIT_OK
    if args.json:
        print(json.dumps(result.to_json(), indent=2), file=stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
