"""What a pull is asked to do, and the refusal of a malformed ask before any work.

A ``PullRequest`` is the Python form of the CLI arguments; ``check_request``
rejects bad digests, repository names, registry URLs and limits up front, so a
typo fails in a second with exit 2 instead of after a half-finished download.
Credentials come from a private file, never from argv, where ``ps`` shows them.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhost.onhost.pull.errors import CannotRun, Failure

if TYPE_CHECKING:
    from llmhost.onhost.pull.manifest import Layer

# 64 KiB: read, hash and write while the chunk is still in the CPU's cache. Measured on
# the testbed against curl: 1 MiB chunks cost up to a second more system time per 540 MB.
DEFAULT_CHUNK_SIZE = 64 * 1024
DEFAULT_JOBS = 4
DEFAULT_TIMEOUT = 60.0

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


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


def check_request(request: PullRequest) -> tuple[str, ...]:
    """Refuse a malformed request before touching the network or the disk.

    Returns the registry URLs, normalised to ``scheme://host[:port]``.
    """
    if not request.registries:
        raise CannotRun("no registry given. Fix: pass --registry https://HOST:PORT at least once")
    if not DIGEST_RE.fullmatch(request.digest):
        raise CannotRun(
            f"--digest {request.digest!r} is not a manifest digest. "
            "Fix: pass sha256: followed by 64 lowercase hex digits"
        )
    if not REPOSITORY_RE.fullmatch(request.repository):
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
