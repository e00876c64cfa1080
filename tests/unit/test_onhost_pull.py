"""The on-host puller against an in-test registry on loopback: auth, Range, faults, failover."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llmhost.onhost.pull import pull
from llmhost.onhost.pull.cli import main
from llmhost.onhost.pull.errors import CannotRun, IntegrityError, PullError
from llmhost.onhost.pull.manifest import OCI_MANIFEST
from llmhost.onhost.pull.progress import Progress
from llmhost.onhost.pull.registry import build_ssl_context
from llmhost.onhost.pull.request import Credentials, PullRequest, load_credentials

REPO_ROOT = str(Path(__file__).resolve().parents[2])
USER, PASSWORD = "puller", "s3cret-pw"
REPO = "models/tiny"
CHUNK = 64 * 1024


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_for(files: dict[str, bytes]) -> bytes:
    layers = [
        {
            "mediaType": "application/octet-stream",
            "digest": sha(data),
            "size": len(data),
            "annotations": {"org.opencontainers.image.title": title},
        }
        for title, data in files.items()
    ]
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.llmhost.model.v1",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha(b"{}"),
            "size": 2,
        },
        "layers": layers,
    }
    return json.dumps(doc, indent=2).encode()


class FakeRegistry:
    """A distribution-like registry serving manifests and blobs from dicts, with faults."""

    def __init__(self, *, auth: str = "basic", honour_range: bool = True) -> None:
        self.auth = auth  # "basic" or "bearer"
        self.honour_range = honour_range
        self.redirect_blobs = False
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.corrupt: set[str] = set()
        self.manifest_status: int | None = None  # e.g. 503: the registry is unhealthy
        self.cut_after: dict[str, int] = {}  # digest -> bytes sent before the socket is cut, once
        self.served: Counter[str] = Counter()  # body bytes sent per blob digest
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"registry": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, files: dict[str, bytes]) -> str:
        """Push an artifact; returns its manifest digest."""
        for data in files.values():
            self.blobs[sha(data)] = data
        body = manifest_for(files)
        self.manifests[sha(body)] = body
        return sha(body)

    def blob_requests(self) -> list[tuple[str, dict[str, str]]]:
        return [r for r in self.requests if "/blobs/" in r[0] or r[0].startswith("/storage/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    registry: ClassVar[FakeRegistry]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        reg = self.registry
        with reg.lock:
            reg.requests.append((self.path, dict(self.headers.items())))
        if self.path.startswith("/token"):
            return self._token()
        if self.path.startswith("/storage/"):  # redirect target: no registry auth
            digest = self.path.removeprefix("/storage/")
            return self._blob(digest, reg.blobs[digest])
        if not self._authorised():
            return self._challenge()
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(sha256:[0-9a-f]{64})", self.path)
        if not match or match.group(1) != REPO:
            return self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
        _, kind, digest = match.groups()
        if kind == "manifests" and reg.manifest_status:
            return self._error(reg.manifest_status, "UNAVAILABLE", "storage backend down")
        if kind == "manifests":
            body = reg.manifests.get(digest)
            if body is None:
                return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return self._send(200, body, {"Content-Type": OCI_MANIFEST})
        data = reg.blobs.get(digest)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if reg.redirect_blobs:
            return self._send(307, b"", {"Location": f"{reg.url}/storage/{digest}"})
        return self._blob(digest, data)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.registry.auth == "bearer":
            return header == "Bearer t0ken"
        return header == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def _challenge(self) -> None:
        if self.registry.auth == "bearer":
            value = (
                f'Bearer realm="{self.registry.url}/token",service="fake",'
                f'scope="repository:{REPO}:pull"'
            )
        else:
            value = 'Basic realm="Registry Realm"'
        self._error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": value})

    def _token(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected or "scope=repository" not in self.path:
            return self._error(401, "UNAUTHORIZED", "bad login")
        self._send(200, json.dumps({"token": "t0ken"}).encode(), {})

    def _blob(self, digest: str, data: bytes) -> None:
        reg = self.registry
        if digest in reg.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status, headers = 0, 200, {}
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if wanted and reg.honour_range:
            start = int(wanted.group(1))
            if start >= len(data):
                return self._error(416, "RANGE_INVALID", "range not satisfiable")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        with reg.lock:
            cut = reg.cut_after.pop(digest, None)
        if cut is None:
            self._send(status, body, headers)
            with reg.lock:
                reg.served[digest] += len(body)
            return
        self._send_head(status, len(body), headers)
        self.wfile.write(body[:cut])
        with reg.lock:
            reg.served[digest] += cut
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._send_head(status, len(body), headers)
        self.wfile.write(body)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    yield reg
    reg.close()


@pytest.fixture
def dr() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    yield reg
    reg.close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def model_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "tiny"}\n',
        "model.safetensors": os.urandom(1024 * 1024 + 17),
        "tokenizer/vocab.txt": b"\n".join(b"tok%d" % i for i in range(5000)),
    }


def request(
    tmp_path: Path,
    registries: list[str],
    digest: str,
    *,
    password: str = PASSWORD,
    **extra: Any,
) -> PullRequest:
    return PullRequest(
        registries=tuple(registries),
        repository=REPO,
        digest=digest,
        store=tmp_path / "blobs",
        dest=tmp_path / "models" / f"tiny@{digest.removeprefix('sha256:')}",
        credentials=Credentials(USER, password, "auth.json"),
        chunk_size=CHUNK,
        timeout=5,
        **extra,
    )


def write_auth(tmp_path: Path, password: str = PASSWORD, mode: int = 0o600) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"username": USER, "password": password}))
    path.chmod(mode)
    return path


def cli_args(tmp_path: Path, registries: list[str], digest: str, *extra: str) -> list[str]:
    args = [f"--registry={url}" for url in registries]
    req = request(tmp_path, registries, digest)
    return [
        *args,
        f"--repository={REPO}",
        f"--digest={digest}",
        f"--store={req.store}",
        f"--dest={req.dest}",
        f"--auth-file={write_auth(tmp_path)}",
        "--chunk-size=64K",
        "--no-progress",
        *extra,
    ]


def leftovers(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if ".partial" in p.name or ".tmp-" in p.name)


# --------------------------------------------------------------------------- happy path


def test_pull_builds_hardlinked_model_dir(tmp_path, registry):
    files = model_files()
    digest = registry.add(files)
    req = request(tmp_path, [registry.url], digest)

    result = pull(req)

    assert result.ok and result.changed and result.registry == registry.url
    assert result.downloaded_bytes == sum(len(d) for d in files.values())
    assert result.reused_bytes == 0
    assert sorted(f.title for f in result.files) == sorted(files)
    for title, data in files.items():
        placed = req.dest / title
        assert placed.read_bytes() == data
        stored = req.store / "sha256" / sha(data).removeprefix("sha256:")
        assert os.stat(placed).st_ino == os.stat(stored).st_ino
        assert not stat.S_IMODE(stored.stat().st_mode) & 0o222  # read-only: shared by links
    assert (req.dest / ".llmhost-manifest.json").read_bytes() == registry.manifests[digest]
    assert leftovers(tmp_path) == []


def test_second_run_downloads_nothing_and_reports_unchanged(tmp_path, registry, capsys):
    digest = registry.add(model_files())
    assert main(cli_args(tmp_path, [registry.url], digest)) == 0
    asked = len(registry.requests)

    assert main(cli_args(tmp_path, [registry.url], digest, "--json")) == 0

    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["changed"] is False
    assert out["downloaded_bytes"] == 0 and out["failures"] == []
    assert {f["path"] for f in out["files"]} == set(model_files())
    assert len(registry.requests) == asked  # an intact dest needs no registry at all


def test_rebuilt_dest_reuses_store_without_fetching_blobs(tmp_path, registry):
    files = model_files()
    digest = registry.add(files)
    req = request(tmp_path, [registry.url], digest)
    pull(req)
    (req.dest / "config.json").unlink()  # damaged dest is rebuilt, not trusted
    before = len(registry.blob_requests())

    result = pull(req)

    assert result.changed and result.downloaded_bytes == 0
    assert result.reused_bytes == sum(len(d) for d in files.values())
    assert len(registry.blob_requests()) == before
    assert (req.dest / "config.json").read_bytes() == files["config.json"]
    assert leftovers(tmp_path) == []


def test_extra_file_in_dest_gets_it_rebuilt_without_the_extra(tmp_path, registry):
    files = model_files()
    digest = registry.add(files)
    req = request(tmp_path, [registry.url], digest)
    pull(req)
    (req.dest / "tokenizer" / "stray.txt").write_text("not in the artifact")
    before = len(registry.blob_requests())

    result = pull(req)

    assert result.ok and result.changed and result.downloaded_bytes == 0
    assert len(registry.blob_requests()) == before  # rebuilt from the store
    assert not (req.dest / "tokenizer" / "stray.txt").exists()
    assert sorted(
        p.relative_to(req.dest).as_posix() for p in req.dest.rglob("*") if p.is_file()
    ) == sorted([*files, ".llmhost-manifest.json"])
    assert not pull(req).changed  # and now it is materialised again
    assert leftovers(tmp_path) == []


def test_identical_files_share_one_download(tmp_path, registry):
    files = {"a/empty": b"", "b/empty": b"", "weights.bin": b"w" * 1000}
    digest = registry.add(files)
    result = pull(request(tmp_path, [registry.url], digest))
    assert result.downloaded_bytes == 1000
    assert len(registry.blob_requests()) == 1  # the empty blob needs no request at all


def test_cli_json_result_schema(tmp_path, registry, capsys):
    digest = registry.add(model_files())
    code = main(cli_args(tmp_path, [registry.url], digest, "--json", "--jobs=2"))
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {
        "ok",
        "changed",
        "registry",
        "repository",
        "digest",
        "dest",
        "files",
        "downloaded_bytes",
        "reused_bytes",
        "failures",
    }
    assert out["registry"] == registry.url and out["digest"] == digest
    assert {"path": "tokenizer/vocab.txt", "digest": sha(model_files()["tokenizer/vocab.txt"]),
            "size": len(model_files()["tokenizer/vocab.txt"])} in out["files"]  # fmt: skip


def test_cli_runs_with_stdlib_only(tmp_path, registry):
    digest = registry.add({"x.bin": b"x" * 100})
    args = cli_args(tmp_path, [registry.url], digest, "--json")
    code = (
        f"import sys; sys.path.insert(0, {REPO_ROOT!r}); "
        "from llmhost.onhost.pull.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(  # -S: no site-packages, so any third-party import would fail
        [sys.executable, "-I", "-S", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


# --------------------------------------------------------------------------- integrity


def test_corrupt_blob_fails_naming_title_and_digests(tmp_path, registry, capsys):
    files = model_files()
    digest = registry.add(files)
    bad = files["tokenizer/vocab.txt"]
    registry.corrupt.add(sha(bad))
    served = bytes([bad[0] ^ 0xFF]) + bad[1:]
    req = request(tmp_path, [registry.url], digest)

    with pytest.raises(PullError) as raised:
        pull(req)

    message = str(raised.value)
    assert raised.value.exit_code == 1
    assert (
        f"corrupt blob in registry {registry.url}: tokenizer/vocab.txt "
        f"expected {sha(bad)} got {sha(served)}"
    ) in message
    assert not req.dest.exists()
    assert leftovers(tmp_path) == []
    assert not (req.store / "sha256" / sha(bad).removeprefix("sha256:")).exists()
    failure = raised.value.result.failures[0] if raised.value.result else None
    assert failure and failure.digest == sha(bad) and failure.title == "tokenizer/vocab.txt"


def test_manifest_bytes_not_matching_digest_are_refused(tmp_path, registry):
    digest = registry.add(model_files())
    registry.manifests[digest] = manifest_for({"evil.bin": b"evil"})
    with pytest.raises(IntegrityError, match="refusing") as raised:
        pull(request(tmp_path, [registry.url], digest))
    assert registry.url in str(raised.value) and digest in str(raised.value)
    assert registry.blob_requests() == []


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("../escape.bin", "'..'"),
        ("weights/../../escape.bin", "'..'"),
        ("/etc/cron.d/evil", "absolute"),
        ("a//b", "empty path segment"),
        ("a\\..\\b", "backslash"),
        ("", "missing or empty"),
        (".llmhost-manifest.json", "reserved"),
        ("notes\nsee also.txt", "control character"),
        ("nul\x00.bin", "control character"),
    ],
)
def test_unsafe_layer_titles_are_refused(tmp_path, registry, title, reason):
    digest = registry.add({"ok.txt": b"fine", title: b"payload"})
    req = request(tmp_path, [registry.url], digest)
    with pytest.raises(IntegrityError) as raised:
        pull(req)
    message = str(raised.value)
    assert "layer 1" in message and sha(b"payload") in message and reason in message
    assert registry.blob_requests() == []
    assert not req.dest.exists() and not (tmp_path / "escape.bin").exists()


def test_file_and_directory_with_one_name_is_refused(tmp_path, registry):
    digest = registry.add({"a": b"1", "a/b": b"2"})
    with pytest.raises(IntegrityError, match="both as a file and as a directory"):
        pull(request(tmp_path, [registry.url], digest))


# --------------------------------------------------------------------------- resume


def test_interrupted_transfer_resumes_where_it_stopped(tmp_path, registry):
    files = model_files()
    digest = registry.add(files)
    big = sha(files["model.safetensors"])
    size = len(files["model.safetensors"])
    registry.cut_after[big] = 300_000
    req = request(tmp_path, [registry.url], digest)

    with pytest.raises(PullError, match="partial download is kept") as raised:
        pull(req)
    assert raised.value.exit_code == 1
    assert not req.dest.exists()
    partial = req.store / "sha256" / (big.removeprefix("sha256:") + ".partial")
    assert partial.stat().st_size == 300_000
    assert registry.served[big] == 300_000

    result = pull(req)

    assert result.ok and (req.dest / "model.safetensors").read_bytes() == files["model.safetensors"]
    resent = registry.served[big] - size  # served over both runs, minus the blob once
    assert resent <= CHUNK  # at most one chunk of what already arrived is fetched again
    ranges = [h.get("Range") for p, h in registry.blob_requests() if big in p]
    assert ranges[-1] == "bytes=300000-"
    assert result.reused_bytes == 300_000 + len(files["config.json"]) + len(
        files["tokenizer/vocab.txt"]
    )
    assert result.downloaded_bytes == size - 300_000
    assert leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    reg = FakeRegistry(honour_range=False)
    try:
        files = {"w.bin": os.urandom(200_000)}
        digest = reg.add(files)
        reg.cut_after[sha(files["w.bin"])] = 50_000
        req = request(tmp_path, [reg.url], digest)
        with pytest.raises(PullError):
            pull(req)
        result = pull(req)
        assert (req.dest / "w.bin").read_bytes() == files["w.bin"]
        assert result.downloaded_bytes == 200_000 and result.reused_bytes == 0
    finally:
        reg.close()


def test_partial_longer_than_blob_is_discarded(tmp_path, registry):
    files = {"w.bin": b"w" * 1000}
    digest = registry.add(files)
    req = request(tmp_path, [registry.url], digest)
    partial = req.store / "sha256" / (sha(files["w.bin"]).removeprefix("sha256:") + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 5000)
    assert pull(req).downloaded_bytes == 1000
    assert (req.dest / "w.bin").read_bytes() == files["w.bin"]


# --------------------------------------------------------------------------- failover


def test_primary_down_uses_dr(tmp_path, dr):
    files = model_files()
    digest = dr.add(files)
    result = pull(request(tmp_path, [closed_port_url(), dr.url], digest))
    assert result.ok and result.registry == dr.url


def test_primary_answering_503_uses_dr(tmp_path, registry, dr):
    files = model_files()
    digest = registry.add(files)
    dr.add(files)
    registry.manifest_status = 503
    result = pull(request(tmp_path, [registry.url, dr.url], digest))
    assert result.ok and result.registry == dr.url


def test_primary_that_never_answers_times_out_to_dr(tmp_path, dr):
    digest = dr.add(model_files())
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # the kernel accepts connections, nobody ever answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        req = request(tmp_path, [url, dr.url], digest)
        result = pull(dataclasses.replace(req, timeout=0.5))
    finally:
        silent.close()
    assert result.ok and result.registry == dr.url


def test_mid_blob_failure_continues_from_dr(tmp_path, registry, dr):
    files = model_files()
    digest = registry.add(files)
    dr.add(files)
    big = sha(files["model.safetensors"])
    registry.cut_after[big] = 400_000

    result = pull(request(tmp_path, [registry.url, dr.url], digest))

    assert result.ok and result.registry == registry.url
    assert dr.served[big] == len(files["model.safetensors"]) - 400_000  # resumed, not restarted


def test_all_registries_down_exits_2_and_leaves_dest_alone(tmp_path, capsys):
    down = [closed_port_url(), closed_port_url()]
    digest = sha(b"anything")
    dest = request(tmp_path, down, digest).dest

    code = main(cli_args(tmp_path, down, digest, "--json"))

    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 2 and out["ok"] is False
    assert [f["registry"] for f in out["failures"]] == down
    for url in down:
        assert f"{url}: connection refused" in captured.err
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []  # no temp dir left


def test_wrong_password_is_a_clear_error_without_the_secret(tmp_path, registry, capsys):
    digest = registry.add(model_files())
    args = cli_args(tmp_path, [registry.url], digest, "--json")
    write_auth(tmp_path, password="wrong-pw")

    code = main(args)

    captured = capsys.readouterr()
    assert code == 2
    assert f"registry {registry.url} refused the credentials for user 'puller'" in captured.err
    assert "wrong-pw" not in captured.err + captured.out
    assert PASSWORD not in captured.err + captured.out


def test_unknown_digest_names_digest_and_repository(tmp_path, registry):
    registry.add(model_files())
    missing = sha(b"never pushed")
    with pytest.raises(CannotRun) as raised:
        pull(request(tmp_path, [registry.url], missing))
    message = str(raised.value)
    assert "unknown digest" in message and missing in message and REPO in message
    assert registry.url in message and raised.value.exit_code == 2


def test_bearer_token_flow(tmp_path):
    reg = FakeRegistry(auth="bearer")
    try:
        digest = reg.add(model_files())
        assert pull(request(tmp_path, [reg.url], digest)).ok
        tokens = [p for p, _ in reg.requests if p.startswith("/token")]
        assert len(tokens) == 1  # one token shared by all parallel blob fetches
    finally:
        reg.close()


def test_blob_redirect_does_not_forward_credentials(tmp_path, registry):
    registry.redirect_blobs = True
    files = model_files()
    digest = registry.add(files)
    req = request(tmp_path, [registry.url], digest)
    assert pull(req).ok
    storage = [h for p, h in registry.requests if p.startswith("/storage/")]
    assert len(storage) == len(files)
    assert all("Authorization" not in h for h in storage)


# --------------------------------------------------------------------------- inputs


def test_auth_file_readable_by_others_is_refused(tmp_path):
    path = write_auth(tmp_path, mode=0o644)
    with pytest.raises(CannotRun, match="chmod 600") as raised:
        load_credentials(path)
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(load_credentials(write_auth(tmp_path)))


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--digest", "sha256:abc", "not a manifest digest"),
        ("--repository", "Models/Tiny", "not a repository name"),
        ("--registry", "https://user:pw@reg:5000", "must not contain credentials"),
        ("--registry", "ftp://reg", "must look like"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, flag, value, problem):
    args = cli_args(tmp_path, ["http://127.0.0.1:9"], sha(b"x"))
    args = [a for a in args if not a.startswith(flag + "=")] + [f"{flag}={value}"]
    assert main(args) == 2
    assert problem in capsys.readouterr().err


def test_bad_ca_file_is_reported(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(CannotRun, match=f"cannot load CA bundle {bogus}"):
        build_ssl_context(bogus)


def test_https_with_private_ca(tmp_path):
    """--ca-file is what makes the registry's certificate trusted."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmhost test CA")])
    ca_cert = cert("llmhost test CA", ca_key, ca_name, ca_key, True)
    server_cert = cert("registry", server_key, ca_name, ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(
        server_cert.public_bytes(pem)
        + server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    reg = FakeRegistry()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem")
    reg.server.socket = server_ctx.wrap_socket(reg.server.socket, server_side=True)
    https = reg.url.replace("http://", "https://")
    try:
        digest = reg.add({"w.bin": b"w" * 5000})
        with pytest.raises(CannotRun, match="TLS certificate verification failed"):
            pull(request(tmp_path / "a", [https], digest))
        result = pull(request(tmp_path / "b", [https], digest, ca_file=tmp_path / "ca.pem"))
        assert result.ok and result.registry == https
    finally:
        reg.close()


def test_progress_plain_lines_are_throttled():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, live=False, interval=5, clock=lambda: now[0])
    progress.begin(1000)
    for _ in range(10):
        now[0] += 1
        progress.add(downloaded=50)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # at t=5, t=10, and the final line
    assert lines[-1].startswith("ocipull: 500 B / 1000 B (50%)")
    assert "50 B/s" in lines[-1] and "ETA 0:00:10" in lines[-1]
    assert "\r" not in stream.getvalue()
