"""Pull an OCI artifact (a model) by manifest digest: verified, resumable, atomic.

This package ships inside ``onhost.pyz`` and runs on hosts as
``python3 /usr/local/lib/llmhost/onhost.pyz pull ...`` (see ``cli``). Hosts have
only python3, so it uses the standard library alone: it imports nothing but
``llmhost.onhost``, and no third-party packages. Keep it that way. The control
side imports the same code (``from llmhost.onhost.pull import pull``) to verify
and copy artifacts between registries.

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

The layers, bottom up: ``errors`` (exit codes and exceptions), ``request``
(inputs and their validation), ``manifest`` (which files, under which safe
paths), ``registry`` (HTTP, auth, failover rules), ``progress``, ``blobs`` (the
store and resumable downloads), ``materialise`` (the model directory), and
``pull()`` here, which runs them in order.

Exit codes: 0 done, 1 failed (verification or transfer), 2 cannot run (bad
arguments, no registry reachable, credentials refused, unknown digest).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from llmhost.onhost.pull.blobs import (
    Blob,
    BlobFetcher,
    blob_path,
    check_free_space,
    check_store,
    fetch_all,
    group_blobs,
    stored_size_ok,
)
from llmhost.onhost.pull.errors import EXIT_CANNOT_RUN, CannotRun, PullError
from llmhost.onhost.pull.manifest import parse_manifest
from llmhost.onhost.pull.materialise import (
    clean_stale_siblings,
    materialise,
    materialised_layers,
)
from llmhost.onhost.pull.progress import Progress
from llmhost.onhost.pull.registry import Registry, build_ssl_context, fetch_manifest
from llmhost.onhost.pull.request import PullRequest, PullResult, check_request


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
    urls = check_request(request)
    existing = materialised_layers(request.dest, request.digest)
    if existing is not None:  # idempotent and offline: the registry is not even asked
        result.files, result.ok = existing, True
        return
    try:
        clean_stale_siblings(request.dest)
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
    check_store(request.store, blobs)
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
    check_free_space(request.store, blobs)
    order = [source, *(r for r in registries if r is not source)]
    fetcher = BlobFetcher(
        order, request.repository, request.store, request.chunk_size, progress, stop
    )
    missing = [b for b in blobs if not stored_size_ok(blob_path(request.store, b.digest), b.size)]
    progress.begin(sum(b.size for b in missing))
    try:
        errors = fetch_all(fetcher, blobs, request.jobs)
    finally:
        progress.finish()
    if errors:
        exit_code = max(e.exit_code for e in errors)
        error_type = CannotRun if exit_code == EXIT_CANNOT_RUN else PullError
        raise error_type(
            f"{len(errors)} of {len(blobs)} blobs failed:\n  " + "\n  ".join(map(str, errors)),
            failures=[f for e in errors for f in e.failures],
        )
