"""The gateway's metrics, read from its JSON audit log: ``onhost.pyz audit-exporter``.

Runs on every gateway host as ``python3 /usr/local/lib/llmhost/onhost.pyz audit-exporter``
(standard library only), follows ``/var/log/nginx/llmhost-audit.log`` and serves what it
counts on ``GET /metrics`` (Prometheus text format 0.0.4, default ``0.0.0.0:9114``).

Why the audit log, and not nginx's ``stub_status`` (and its exporter) or an nginx module:

- ``stub_status`` gives a handful of server-wide numbers (connections, requests so far)
  with no split by identity, colour or status, so it can answer neither "which key is
  getting 429s" nor "is the new colour answering 5xx". Per-request metrics need a
  module (the VTS module, or nginx Plus's API), which Debian does not ship with its
  nginx: another package to build, pin and trust on every gateway.
- The audit log already carries exactly those dimensions, one line per request, with
  the colour the request was sent to; nginx writes it unbuffered (an audit line is
  never held back), so the metrics lag a request by one poll of the file (0.5 s).
  Nothing new is installed: python3 is on every host and the exporter is one more tool
  in the archive the roles already ship.

What it cannot do, honestly:

- Tokens are what the engine says it used: the gateway's usage.js reads the answer's
  OpenAI ``usage`` object as it passes (the log never holds a body) and the line carries
  ``prompt_tokens`` and ``completion_tokens``. A stream that did not ask for usage
  (``stream_options.include_usage``) has none, and neither does an answer cut off before
  its end: those successful answers are counted in
  ``llmhost_gateway_answers_without_usage_total``, so a dashboard can say how much of the
  traffic its token figures cover. Tokens per second are the engine's own metrics
  (``vllm:*``, ``llamacpp:*``), scraped per colour. The bytes counters are wire bytes.
- A request is counted when its line is written, which is when it *ends*: a two-minute
  streamed completion shows up after two minutes. In-flight requests and open
  connections are not seen (the engine's metrics count what it is working on).
- ``first_byte_seconds`` is nginx's ``$upstream_header_time``: until the engine's
  response headers arrived. It is time to first token only where the engine sends its
  headers with the first token; an engine that sends them on admission makes it the
  time to admission. The engine's own time-to-first-token histogram is the exact one;
  this one is the same for both engines, and counts the gateway's hop. Lines written
  before the field was added have no first-byte time and are left out of it.
- ``/healthz`` has ``access_log off`` and is not counted. ``path`` and ``method`` are
  never labels: both are chosen by the client, so they would be unbounded.
- The exporter starts at the log's end, so lines written while it was down are not
  counted; its counters restart from zero when it does (Prometheus's ``rate()`` and
  ``increase()`` handle a counter reset). ``--from-start`` reads the whole file (tests).
- Rotation by rename (Debian's logrotate: rename, create a new file, tell nginx to
  reopen) loses nothing: the old file is read to its end, then kept open and read for
  a grace period, for lines nginx writes before it reopens. A ``copytruncate`` rotation
  (not what the gateway uses) loses whatever was written between the last poll and the
  truncation, and goes unseen if the file outgrows the old read position before the
  next poll.
- ``last_request_timestamp_seconds`` is the log's ``$time_iso8601``: one-second
  resolution, the time the request ended.

Labels: ``identity`` is the API key's name from the gateway's key map, never the key;
``request_id`` and ``client`` are never labels (one series per request or per address).
An empty identity is kept as ``identity=""``: those are requests without a valid key
(the 401s), and their rate is an alert signal (a leaked or revoked key still in use, a
scan). At most ``--max-identities`` (default 1000) distinct identities get their own
series; requests of any identity after that are counted under ``identity="_other"`` and
in ``llmhost_gateway_audit_identities_folded_total``, so a mistake in the key map cannot
blow up Prometheus. Colours are folded the same way past a handful (there are two, and
``none`` before a host's first release).

Malformed lines (not JSON, a field missing or of the wrong type) are skipped and counted
in ``llmhost_gateway_audit_lines_skipped_total``. ``llmhost_gateway_audit_up`` is 1 while
the log can be read; otherwise 0, with ``llmhost_gateway_audit_up_reason{reason}`` saying
why (``missing``, ``permission_denied``, ``not_a_file``, ``read_error``): the exporter
keeps answering, so the alert is about the log, not a scrape failure. The unit must run
with read access to the log (Debian: group ``adm``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, BinaryIO

from llmhost.onhost.layout import GATEWAY_AUDIT_LOG

DEFAULT_LOG = GATEWAY_AUDIT_LOG
DEFAULT_LISTEN = "0.0.0.0:9114"
DEFAULT_MAX_IDENTITIES = 1000
MAX_COLOURS = 8
OTHER = "_other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Whole LLM requests: a cached short answer (tens of ms) to a long generation (minutes).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# Until the engine's first response byte: admission and, for most streams, prefill.
FIRST_BYTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

POLL_INTERVAL_S = 0.5
ROTATED_GRACE_S = 30.0  # how long a rotated file is still read, for nginx to reopen
READ_CHUNK = 1 << 20
MAX_LINE = 1 << 20  # longer than any audit line; a runaway "line" is dropped, not kept
REASONS = ("missing", "permission_denied", "not_a_file", "read_error")

_SEPARATORS = re.compile(r"\s*[,:]\s*")


# -- one audit line ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What the metrics use of one audit line."""

    identity: str
    colour: str
    status: int
    request_bytes: int
    response_bytes: int
    request_time: float
    timestamp: float
    first_byte: float | None  # the last attempt's upstream_header_time, if it got headers
    retried: bool  # nginx sent it again (a dead pooled connection): "502, 200"
    prompt_tokens: int | None = None  # from the answer's usage; None: it reported none
    completion_tokens: int | None = None
    team: str = ""  # as the edge in front named them ("" straight to the gateway)
    feature: str = ""


class Malformed(ValueError):
    pass


def _number(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise Malformed(f"{key} is not a number")
    if not math.isfinite(value):
        raise Malformed(f"{key} is not finite")
    return value


def _count(record: dict[str, Any], key: str) -> int:
    value = _number(record, key)
    if not isinstance(value, int):
        raise Malformed(f"{key} is not a whole number")
    return value


def _text(record: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def _tokens(record: dict[str, Any], key: str) -> int | None:
    """A token count as usage.js logs it: digits, or "" (absent from older lines too)."""
    value = _text(record, key, optional=True)
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise Malformed(f"{key} is not a whole number")
    return int(value)


def upstream_values(value: str | None) -> list[str]:
    """nginx's per-attempt list: ``"0.1"``, ``"0.001, 0.120"``, ``"- : 0.2"``, ``"-"``, ``""``."""
    if not value or not value.strip():
        return []
    return _SEPARATORS.split(value.strip())


def last_seconds(value: str | None) -> float | None:
    """The last attempt's time, or None if it has none (``-``: no answer from the engine)."""
    values = upstream_values(value)
    if not values:
        return None
    try:
        seconds = float(values[-1])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_line(line: bytes) -> Request:
    """One audit line, or Malformed. Only the fields the metrics need are checked."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise Malformed("not JSON") from error
    if not isinstance(record, dict):
        raise Malformed("not a JSON object")
    status = _count(record, "status")
    if not 100 <= status <= 999:
        raise Malformed("status is not an HTTP status")
    try:
        when = datetime.fromisoformat(_text(record, "time") or "")
    except ValueError as error:
        raise Malformed("time is not ISO 8601") from error
    if when.tzinfo is None:
        raise Malformed("time has no offset")
    upstream_status = _text(record, "upstream_status", optional=True)
    header_time = _text(record, "upstream_header_time", optional=True)
    return Request(
        identity=_text(record, "identity") or "",
        colour=_text(record, "colour") or "",
        status=status,
        request_bytes=_count(record, "request_bytes"),
        response_bytes=_count(record, "response_bytes"),
        request_time=_number(record, "request_time"),
        timestamp=when.timestamp(),
        first_byte=last_seconds(header_time),
        # Only commas: attempts within one upstream group; " : " is an internal redirect.
        retried=any(len(group.split(",")) > 1 for group in (upstream_status or "").split(":")),
        prompt_tokens=_tokens(record, "prompt_tokens"),
        completion_tokens=_tokens(record, "completion_tokens"),
        team=_text(record, "team", optional=True) or "",
        feature=_text(record, "feature", optional=True) or "",
    )


# -- the metrics -------------------------------------------------------------------------------


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; + the +Inf one
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        self.counts[index] += 1
        self.total += value
        self.count += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _bound(bound: float) -> str:
    return format(bound, "g")


Key = tuple[str, ...]
Series = Mapping[Key, float]  # ints too


class Metrics:
    """Everything counted so far; fed by the tailer, rendered for each scrape, under one lock."""

    def __init__(self, *, max_identities: int = DEFAULT_MAX_IDENTITIES) -> None:
        self.max_identities = max_identities
        self._lock = threading.Lock()
        self._identities: set[str] = set()
        self._colours: set[str] = set()
        self.requests: dict[Key, int] = {}
        self.durations: dict[Key, Histogram] = {}
        self.first_bytes: dict[Key, Histogram] = {}
        self.request_bytes: dict[Key, int] = {}
        self.response_bytes: dict[Key, int] = {}
        self.retries: dict[Key, int] = {}
        self.tokens: dict[Key, int] = {}
        self.attributed: dict[Key, int] = {}  # (identity, team, feature, kind)
        self._attributions: set[tuple[str, str]] = set()
        self.without_usage: dict[Key, int] = {}
        self.last_request: dict[Key, float] = {}
        self.lines_read = 0
        self.lines_skipped = 0
        self.identities_folded = 0
        self.reopens: dict[Key, int] = {("rotated",): 0, ("truncated",): 0}
        self.up_reason: str | None = None

    def _identity(self, identity: str) -> str:
        # The empty identity (no valid key) is always its own series and uses no slot.
        if identity == "" or identity in self._identities:
            return identity
        if len(self._identities) < self.max_identities:
            self._identities.add(identity)
            return identity
        self.identities_folded += 1
        return OTHER

    def _colour(self, colour: str) -> str:
        if colour in self._colours:
            return colour
        if len(self._colours) < MAX_COLOURS:
            self._colours.add(colour)
            return colour
        return OTHER

    def add_lines(self, lines: Iterable[bytes]) -> None:
        with self._lock:
            for line in lines:
                if not line.strip():
                    continue
                self.lines_read += 1
                try:
                    request = parse_line(line)
                except Malformed:
                    self.lines_skipped += 1
                    continue
                self._add(request)

    def skip(self, lines: int = 1) -> None:
        with self._lock:
            self.lines_read += lines
            self.lines_skipped += lines

    def _add(self, request: Request) -> None:
        identity, colour = self._identity(request.identity), self._colour(request.colour)
        pair = (identity, colour)
        key = (identity, colour, str(request.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.durations.setdefault(pair, Histogram(DURATION_BUCKETS)).observe(request.request_time)
        self.request_bytes[pair] = self.request_bytes.get(pair, 0) + request.request_bytes
        self.response_bytes[pair] = self.response_bytes.get(pair, 0) + request.response_bytes
        # Zero from a colour's first request on, so rate() sees the first retry.
        self.retries[(colour,)] = self.retries.get((colour,), 0) + int(request.retried)
        self._add_tokens(pair, request)
        if request.first_byte is not None:
            hist = self.first_bytes.setdefault((colour,), Histogram(FIRST_BYTE_BUCKETS))
            hist.observe(request.first_byte)
        # Lines from a rotated file may come after newer ones: never go back.
        previous = self.last_request.get((colour,), 0.0)
        self.last_request[(colour,)] = max(previous, request.timestamp)

    def _attribution(self, team: str, feature: str) -> tuple[str, str]:
        # Teams and features come from the edge's configured lists: a handful. Past the
        # same bound as identities they fold, as identities do.
        if (team, feature) in self._attributions or not (team or feature):
            return team, feature
        if len(self._attributions) < self.max_identities:
            self._attributions.add((team, feature))
            return team, feature
        return OTHER, OTHER

    def _add_tokens(self, pair: tuple[str, str], request: Request) -> None:
        counts = (("prompt", request.prompt_tokens), ("completion", request.completion_tokens))
        team, feature = self._attribution(request.team, request.feature)
        for kind, tokens in counts:
            if tokens is not None:
                self.tokens[(*pair, kind)] = self.tokens.get((*pair, kind), 0) + tokens
                key = (pair[0], team, feature, kind)
                self.attributed[key] = self.attributed.get(key, 0) + tokens
        if 200 <= request.status < 300:
            missing = request.prompt_tokens is None and request.completion_tokens is None
            colour = (pair[1],)
            self.without_usage[colour] = self.without_usage.get(colour, 0) + int(missing)

    def reopened(self, cause: str) -> None:
        with self._lock:
            self.reopens[(cause,)] = self.reopens.get((cause,), 0) + 1

    def set_up(self, reason: str | None) -> None:
        """None: the log is readable; else why it is not (one of REASONS)."""
        with self._lock:
            self.up_reason = reason

    def render(self) -> str:
        with self._lock:
            reasons: dict[Key, int] = {} if self.up_reason is None else {(self.up_reason,): 1}
            out: list[str] = []
            family = _Family(out)
            family.scalar(
                "llmhost_gateway_requests_total",
                "counter",
                "Requests the gateway answered, by API key identity, colour and HTTP status.",
                ("identity", "colour", "status"),
                self.requests,
            )
            family.histogram(
                "llmhost_gateway_request_duration_seconds",
                "Whole request time as nginx measured it ($request_time), until the last byte.",
                ("identity", "colour"),
                self.durations,
            )
            family.histogram(
                "llmhost_gateway_first_byte_seconds",
                "Time until the engine's response headers ($upstream_header_time, last "
                "attempt), for requests that reached an engine.",
                ("colour",),
                self.first_bytes,
            )
            family.scalar(
                "llmhost_gateway_request_bytes_total",
                "counter",
                "Bytes received from clients, headers and body ($request_length).",
                ("identity", "colour"),
                self.request_bytes,
            )
            family.scalar(
                "llmhost_gateway_response_bytes_total",
                "counter",
                "Bytes sent to clients ($bytes_sent).",
                ("identity", "colour"),
                self.response_bytes,
            )
            family.scalar(
                "llmhost_gateway_upstream_retries_total",
                "counter",
                "Requests nginx sent to the engine again after a failed attempt on a dead "
                'pooled connection (upstream_status like "502, 200").',
                ("colour",),
                self.retries,
            )
            family.scalar(
                "llmhost_gateway_tokens_total",
                "counter",
                "Tokens the engine reported in its answers' usage, by identity, colour and "
                "kind (prompt, completion).",
                ("identity", "colour", "kind"),
                self.tokens,
            )
            family.scalar(
                "llmhost_gateway_attributed_tokens_total",
                "counter",
                "The same tokens by identity, and by the team and feature the edge in front "
                'named (team="", feature="": no edge, or none given); what cost is counted by.',
                ("identity", "team", "feature", "kind"),
                self.attributed,
            )
            family.scalar(
                "llmhost_gateway_answers_without_usage_total",
                "counter",
                "Successful answers that reported no usage (a stream without "
                "include_usage, an answer cut off): their tokens are not counted.",
                ("colour",),
                self.without_usage,
            )
            family.scalar(
                "llmhost_gateway_last_request_timestamp_seconds",
                "gauge",
                "Unix time of the newest request in the audit log ($time_iso8601, 1 s).",
                ("colour",),
                self.last_request,
            )
            family.scalar(
                "llmhost_gateway_audit_up",
                "gauge",
                "1 while the audit log can be read, else 0 (see llmhost_gateway_audit_up_reason).",
                (),
                _single(int(self.up_reason is None)),
            )
            family.scalar(
                "llmhost_gateway_audit_up_reason",
                "gauge",
                "Why the audit log cannot be read; present only while llmhost_gateway_audit_up "
                "is 0.",
                ("reason",),
                reasons,
            )
            family.scalar(
                "llmhost_gateway_audit_lines_read_total",
                "counter",
                "Non-empty lines read from the audit log, skipped ones included.",
                (),
                _single(self.lines_read),
            )
            family.scalar(
                "llmhost_gateway_audit_lines_skipped_total",
                "counter",
                "Audit lines skipped as malformed (not JSON, a field missing or mistyped).",
                (),
                _single(self.lines_skipped),
            )
            family.scalar(
                "llmhost_gateway_audit_identities_folded_total",
                "counter",
                'Requests counted under identity="_other": more distinct identities than the '
                "exporter's --max-identities.",
                (),
                _single(self.identities_folded),
            )
            family.scalar(
                "llmhost_gateway_audit_reopens_total",
                "counter",
                "Times the audit log was reopened: rotated (a new file) or truncated.",
                ("cause",),
                self.reopens,
            )
            return "".join(out)


def _single(value: float) -> Series:
    return {(): value}


@dataclass
class _Family:
    out: list[str]

    def _head(self, name: str, kind: str, help_text: str) -> None:
        self.out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

    def scalar(
        self,
        name: str,
        kind: str,
        help_text: str,
        names: Sequence[str],
        series: Series,
    ) -> None:
        self._head(name, kind, help_text)
        for key in sorted(series):
            self.out.append(f"{name}{_labels(names, key)} {_value(series[key])}\n")

    def histogram(
        self, name: str, help_text: str, names: Sequence[str], series: dict[Key, Histogram]
    ) -> None:
        self._head(name, "histogram", help_text)
        for key in sorted(series):
            hist = series[key]
            cumulative = 0
            bounds = [*(_bound(b) for b in hist.buckets), "+Inf"]
            for bound, count in zip(bounds, hist.counts, strict=True):
                cumulative += count
                labels = _labels([*names, "le"], [*key, bound])
                self.out.append(f"{name}_bucket{labels} {cumulative}\n")
            self.out.append(f"{name}_sum{_labels(names, key)} {_value(hist.total)}\n")
            self.out.append(f"{name}_count{_labels(names, key)} {hist.count}\n")


# -- following the file ------------------------------------------------------------------------


@dataclass
class _Open:
    handle: BinaryIO
    inode: tuple[int, int]
    pending: bytes = b""
    discarding: bool = False  # inside a runaway line: drop until the next newline
    deadline: float = 0.0  # for a rotated file: when to stop reading it


def _reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, PermissionError):
        return "permission_denied"
    if isinstance(error, IsADirectoryError | NotADirectoryError):
        return "not_a_file"
    return "read_error"


class Tailer:
    """Follows one log file across rotations; ``poll()`` reads what is new and returns.

    The file is identified by (device, inode). Each poll looks at the path: a different
    inode means the file was rotated (the old one is read to its end first, then kept
    and read for ``grace_s`` more, since nginx writes to it until it reopens, then
    closed) and the new one is read from its start; a size below the read position
    means it was truncated (read again from the start); no file means keep reading the
    open one. A file that appears after the exporter started is read from its start:
    all of it is new. Only the first poll of an existing file skips to its end.
    """

    def __init__(
        self,
        path: str,
        metrics: Metrics,
        *,
        from_start: bool = False,
        grace_s: float = ROTATED_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.grace_s = grace_s
        self.clock = clock
        self.current: _Open | None = None
        self.rotated: list[_Open] = []
        self._first_poll = True
        self._skip_existing = not from_start

    def poll(self) -> None:
        skip_existing, self._first_poll = self._first_poll and self._skip_existing, False
        for old in list(self.rotated):
            self._drain(old)
            if self.clock() >= old.deadline:
                self._close(old)
                self.rotated.remove(old)
        reason: str | None = None
        try:
            status = os.stat(self.path)
        except OSError as error:
            # Gone (a rename without a new file yet, or deleted): keep reading what is open.
            if self.current is not None:
                reason = self._drain(self.current) or _reason(error)
            else:
                reason = _reason(error)
            self.metrics.set_up(reason)
            return
        current = self.current
        if current is not None and (status.st_dev, status.st_ino) != current.inode:
            reason = self._drain(current)  # its end first: then the new file
            current.deadline = self.clock() + self.grace_s
            self.rotated.append(current)
            self.current = current = None
            self.metrics.reopened("rotated")
        if current is None:
            try:
                current = self.current = self._open(skip_existing)
            except OSError as error:
                self.metrics.set_up(_reason(error))
                return
        elif status.st_size < current.handle.tell():
            current.handle.seek(0)
            current.pending, current.discarding = b"", False
            self.metrics.reopened("truncated")
        self.metrics.set_up(self._drain(current) or reason)

    def _open(self, at_end: bool) -> _Open:
        handle = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open across polls)
        try:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise IsADirectoryError(self.path)
            if at_end:
                handle.seek(0, os.SEEK_END)
        except OSError:
            handle.close()
            raise
        return _Open(handle, (status.st_dev, status.st_ino))

    def _drain(self, source: _Open) -> str | None:
        """Read ``source`` to its end, feeding complete lines; the reason if reading failed."""
        while True:
            try:
                chunk = source.handle.read(READ_CHUNK)
            except OSError:
                return "read_error"
            if not chunk:
                return None
            self.metrics.add_lines(self._lines(source, chunk))

    def _lines(self, source: _Open, chunk: bytes) -> list[bytes]:
        *lines, rest = (source.pending + chunk).split(b"\n")
        if source.discarding and lines:
            lines, source.discarding = lines[1:], False
        if source.discarding or len(rest) > MAX_LINE:
            if not source.discarding:
                self.metrics.skip()
            source.discarding, rest = True, b""
        source.pending = rest
        return lines

    def _close(self, source: _Open) -> None:
        if source.pending and not source.discarding:
            self.metrics.add_lines([source.pending])  # a last line with no newline
        source.handle.close()

    def close(self) -> None:
        for source in [*self.rotated, *([self.current] if self.current else [])]:
            source.handle.close()
        self.rotated, self.current = [], None


# -- serving -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics  # set on the subclass the server is built with
    server_version = "llmhost-audit-exporter"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would flood the journal

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.metrics.render().encode(), CONTENT_TYPE)
        elif path == "/":
            self._send(200, b"llmhost gateway audit exporter: /metrics\n", "text/plain")
        else:
            self._send(404, b"not found: /metrics\n", "text/plain")

    do_HEAD = do_GET


def make_server(listen: tuple[str, int], metrics: Metrics) -> ThreadingHTTPServer:
    host, port = listen
    handler = type("Handler", (_Handler,), {"metrics": metrics})
    server = _Server6((host, port), handler) if ":" in host else _Server((host, port), handler)
    return server


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never holds up a shutdown


class _Server6(_Server):
    address_family = socket.AF_INET6


def _listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:9114)")
    return host, int(port)


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz audit-exporter",
        description="Serve the gateway's metrics (Prometheus) from its JSON audit log.",
    )
    parser.add_argument("--log", default=DEFAULT_LOG, help=f"the audit log (default {DEFAULT_LOG})")
    parser.add_argument(
        "--listen",
        type=_listen,
        default=_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"where to serve /metrics (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="count the lines already in the log too (default: only new ones)",
    )
    parser.add_argument(
        "--max-identities",
        type=_positive(int),
        default=DEFAULT_MAX_IDENTITIES,
        help=f"distinct identities with their own series; more are {OTHER!r} "
        f"(default {DEFAULT_MAX_IDENTITIES})",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive(float),
        default=POLL_INTERVAL_S,
        metavar="SECONDS",
        help=f"how often the log is read (default {POLL_INTERVAL_S})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metrics = Metrics(max_identities=args.max_identities)
    tailer = Tailer(args.log, metrics, from_start=args.from_start)
    try:
        server = make_server(args.listen, metrics)
    except OSError as error:
        print(f"audit-exporter: cannot listen on {args.listen}: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(
        f"audit-exporter: serving http://{host}:{port}/metrics from {args.log}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.is_set():
            tailer.poll()
            stop.wait(args.poll_interval)
    finally:
        server.shutdown()
        server.server_close()
        tailer.close()
    print("audit-exporter: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
