"""The puller's command line: ``python3 onhost.pyz pull --registry ... --digest ...``.

It turns arguments into a ``PullRequest``, runs ``pull()``, and reports on
stderr, one line prefixed ``ocipull:`` (operators and tests grep for it), with
the exit code saying whether to retry (1) or fix something first (2). ``--json``
prints the result on stdout even when the pull failed, so automation always
gets the per-blob failures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from llmhost.onhost.pull import pull
from llmhost.onhost.pull.errors import EXIT_FAILED, EXIT_OK, PullError
from llmhost.onhost.pull.progress import Progress, human
from llmhost.onhost.pull.request import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_JOBS,
    DEFAULT_TIMEOUT,
    PullRequest,
    PullResult,
    load_credentials,
)


def _size_arg(text: str) -> int:
    """Bytes, optionally with a K or M suffix (binary)."""
    match = re.fullmatch(r"(\d+)\s*([kKmM]?)(?:i?[bB])?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1048576, 512K or 1M")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz pull",
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
        f"{human(result.downloaded_bytes)} downloaded, {human(result.reused_bytes)} reused"
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
