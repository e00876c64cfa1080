"""The gateway's audit-log exporter, against a log file the test writes in nginx's format.

Every scrape is parsed as Prometheus text: each series' family has HELP and TYPE, no
series appears twice, and histograms are cumulative with ``+Inf == _count``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmhost.onhost import app, auditexporter
from llmhost.onhost.auditexporter import Metrics, Tailer
from llmhost.paths import REPO_ROOT

# Two lines as templates/gateway/llmhost-gateway.conf.j2's `llmhost_audit` writes them:
# a streamed completion (with the new upstream_header_time) and a 401 (no key, no upstream).
COMPLETION = (
    '{"time":"2025-03-04T10:15:30+00:00","request_id":"6f1c2a9e0b7d4e3fa1c2d3e4f5a6b7c8",'
    '"identity":"alice","colour":"blue","method":"POST","path":"/v1/chat/completions",'
    '"status":200,"request_bytes":812,"response_bytes":5120,"request_time":3.417,'
    '"upstream_time":"3.415","upstream_status":"200","client":"192.0.2.10",'
    '"upstream_header_time":"0.182"}'
)
UNAUTHORIZED = (
    '{"time":"2025-03-04T10:15:31+00:00","request_id":"0a1b2c3d4e5f60718293a4b5c6d7e8f9",'
    '"identity":"","colour":"blue","method":"POST","path":"/v1/chat/completions",'
    '"status":401,"request_bytes":301,"response_bytes":245,"request_time":0.000,'
    '"upstream_time":"","upstream_status":"","client":"198.51.100.7"}'
)


def line(template: str = COMPLETION, **fields: Any) -> str:
    record = json.loads(template)
    record.update(fields)
    return json.dumps(record, separators=(",", ":")) + "\n"


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(lines))


# -- the exposition format, parsed -------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')

Labels = tuple[tuple[str, str], ...]


def parse_labels(text: str) -> Labels:
    found, position = [], 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"bad labels at {text[position:]!r}"
        value = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), match[2])
        found.append((match[1], value))
        position = match.end()
    return tuple(found)


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """Samples by (name, labels); asserts the format's rules on the way."""
    assert text.endswith("\n")
    helps: set[str] = set()
    types: dict[str, str] = {}
    samples: dict[tuple[str, Labels], float] = {}
    for row in text.splitlines():
        if row.startswith("# HELP "):
            name = row.split(" ")[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps.add(name)
        elif row.startswith("# TYPE "):
            _, _, name, kind = row.split(" ")
            assert kind in ("counter", "gauge", "histogram"), row
            assert name in helps and name not in types, f"TYPE of {name} without HELP first"
            types[name] = kind
        else:
            match = _SAMPLE.match(row)
            assert match, f"not a sample line: {row!r}"
            name, labels = match[1], parse_labels(match[2] or "")
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            if types.get(family) != "histogram":
                family = name
            assert family in types, f"{name} has no HELP/TYPE"
            if types[family] == "counter":
                assert name.endswith("_total"), name
            key = (name, labels)
            assert key not in samples, f"duplicate series {key}"
            samples[key] = float(match[3])
    for (name, labels), value in samples.items():
        if name.endswith("_bucket") and types.get(name[: -len("_bucket")]) == "histogram":
            check_histogram(samples, name[: -len("_bucket")], labels[:-1])
        assert value >= 0, (name, labels)
    return samples


def check_histogram(samples: dict[tuple[str, Labels], float], family: str, key: Labels) -> None:
    buckets = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == f"{family}_bucket" and labels[:-1] == key
    ]
    bounds = [bound for bound, _ in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), f"{family}{key} buckets are not cumulative: {counts}"
    assert counts[-1] == samples[(f"{family}_count", key)]
    assert (f"{family}_sum", key) in samples


def scrape(metrics: Metrics) -> dict[tuple[str, Labels], float]:
    return parse(metrics.render())


def L(**labels: str) -> Labels:
    return tuple(labels.items())


def total(samples: dict[tuple[str, Labels], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "llmhost-audit.log"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- what one scrape says ----------------------------------------------------------------------


def test_exact_metric_lines_after_three_requests(log: Path):
    append(
        log,
        COMPLETION,
        "\n",
        UNAUTHORIZED,
        "\n",
        line(
            time="2025-03-04T10:15:40+00:00",
            request_time=0.25,
            request_bytes=100,
            response_bytes=900,
            upstream_status="502, 200",
            upstream_time="0.001, 0.240",
            upstream_header_time="-, 0.030",
        ),
    )
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    text = metrics.render()
    for expected in [
        'llmhost_gateway_requests_total{identity="",colour="blue",status="401"} 1',
        'llmhost_gateway_requests_total{identity="alice",colour="blue",status="200"} 2',
        'llmhost_gateway_request_bytes_total{identity="alice",colour="blue"} 912',
        'llmhost_gateway_request_bytes_total{identity="",colour="blue"} 301',
        'llmhost_gateway_response_bytes_total{identity="alice",colour="blue"} 6020',
        'llmhost_gateway_response_bytes_total{identity="",colour="blue"} 245',
        'llmhost_gateway_upstream_retries_total{colour="blue"} 1',
        # 2025-03-04T10:15:40Z, the newest line
        'llmhost_gateway_last_request_timestamp_seconds{colour="blue"} 1741083340.0',
        "llmhost_gateway_audit_up 1",
        "llmhost_gateway_audit_lines_read_total 3",
        "llmhost_gateway_audit_lines_skipped_total 0",
        'llmhost_gateway_request_duration_seconds_count{identity="alice",colour="blue"} 2',
        'llmhost_gateway_request_duration_seconds_count{identity="",colour="blue"} 1',
        'llmhost_gateway_first_byte_seconds_count{colour="blue"} 2',
        "# TYPE llmhost_gateway_requests_total counter",
        "# TYPE llmhost_gateway_request_duration_seconds histogram",
        "# TYPE llmhost_gateway_first_byte_seconds histogram",
        "# TYPE llmhost_gateway_last_request_timestamp_seconds gauge",
        "# TYPE llmhost_gateway_audit_up gauge",
    ]:
        assert expected + "\n" in text, expected
    assert "llmhost_gateway_audit_up_reason{" not in text
    samples = parse(text)
    assert total(samples, "llmhost_gateway_requests_total") == 3
    # Never a request id, a client address or a path as a label.
    assert "6f1c2a9e" not in text and "192.0.2.10" not in text and "/v1/" not in text
    assert {k for _, labels in samples for k, _ in labels} <= {
        "identity",
        "colour",
        "status",
        "le",
        "cause",
        "kind",
    }


def test_tokens_are_counted_per_identity_colour_and_kind_from_the_usage_fields(log: Path):
    append(
        log,
        line(prompt_tokens="12", completion_tokens="30"),
        line(prompt_tokens="8", completion_tokens="2"),
        line(colour="green", prompt_tokens="5", completion_tokens="0"),
        line(prompt_tokens="", completion_tokens=""),  # a stream without include_usage
        COMPLETION + "\n",  # a line from before the fields existed
        line(UNAUTHORIZED, prompt_tokens="", completion_tokens=""),  # not an answer
    )
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    text = metrics.render()
    for expected in [
        'llmhost_gateway_tokens_total{identity="alice",colour="blue",kind="prompt"} 20',
        'llmhost_gateway_tokens_total{identity="alice",colour="blue",kind="completion"} 32',
        'llmhost_gateway_tokens_total{identity="alice",colour="green",kind="prompt"} 5',
        'llmhost_gateway_tokens_total{identity="alice",colour="green",kind="completion"} 0',
        'llmhost_gateway_answers_without_usage_total{colour="blue"} 2',
        'llmhost_gateway_answers_without_usage_total{colour="green"} 0',
        "# TYPE llmhost_gateway_tokens_total counter",
        "llmhost_gateway_audit_lines_skipped_total 0",
    ]:
        assert expected + "\n" in text, expected
    assert 'identity="",colour="blue",kind=' not in text  # the 401 reported no tokens


def test_tokens_are_attributed_to_the_team_and_feature_the_edge_named(log: Path):
    append(
        log,
        line(prompt_tokens="12", completion_tokens="30", team="research", feature="chat"),
        line(prompt_tokens="8", completion_tokens="2", team="research", feature="chat"),
        line(prompt_tokens="5", completion_tokens="1", team="research", feature=""),
        line(prompt_tokens="4", completion_tokens="4"),  # straight to the gateway: no edge
    )
    metrics = Metrics(max_identities=2)
    Tailer(str(log), metrics, from_start=True).poll()
    text = metrics.render()
    attributed = "llmhost_gateway_attributed_tokens_total"
    for expected in [
        f'{attributed}{{identity="alice",team="research",feature="chat",kind="prompt"}} 20',
        f'{attributed}{{identity="alice",team="research",feature="chat",kind="completion"}} 32',
        f'{attributed}{{identity="alice",team="research",feature="",kind="prompt"}} 5',
        f'{attributed}{{identity="alice",team="",feature="",kind="completion"}} 4',
    ]:
        assert expected + "\n" in text, expected
    append(log, line(prompt_tokens="1", completion_tokens="1", team="third", feature="x"))
    Tailer(str(log), metrics, from_start=True).poll()
    assert f'{attributed}{{identity="alice",team="_other",feature="_other",kind="prompt"}} 1' in (
        metrics.render()
    ), "past the bound, teams and features fold as identities do"


@pytest.mark.parametrize("value", ["-1", "1.5", "12a", "١٢", 12])
def test_a_token_count_that_is_not_digits_makes_the_line_malformed(log: Path, value: Any):
    append(log, line(prompt_tokens=value, completion_tokens="3"))
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    assert "llmhost_gateway_audit_lines_skipped_total 1\n" in metrics.render()


def test_histogram_buckets_are_cumulative_with_the_right_sum_and_count(log: Path):
    times = [0.03, 0.05, 0.7, 3.0, 3.0, 45.0, 150.0]  # 0.05 is in le="0.05": bounds include
    append(log, *(line(request_time=t) for t in times))
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    samples = scrape(metrics)
    key = (("identity", "alice"), ("colour", "blue"))
    name = "llmhost_gateway_request_duration_seconds"
    buckets = {
        dict(labels)["le"]: value
        for (n, labels), value in samples.items()
        if n == f"{name}_bucket" and labels[:-1] == key
    }
    assert list(buckets) == [
        *(format(b, "g") for b in auditexporter.DURATION_BUCKETS),
        "+Inf",
    ]
    assert auditexporter.DURATION_BUCKETS[0] == 0.05 and auditexporter.DURATION_BUCKETS[-1] == 120
    assert buckets == {
        "0.05": 2,
        "0.1": 2,
        "0.25": 2,
        "0.5": 2,
        "1": 3,
        "2.5": 3,
        "5": 5,
        "10": 5,
        "20": 5,
        "30": 5,
        "60": 6,
        "120": 6,
        "+Inf": 7,
    }
    assert samples[(f"{name}_count", key)] == 7
    assert samples[(f"{name}_sum", key)] == pytest.approx(sum(times))


def test_first_byte_is_the_last_attempts_header_time_and_only_when_an_engine_answered(log: Path):
    append(
        log,
        line(upstream_header_time="0.004"),
        line(upstream_header_time="0.001, 0.120"),  # retried: the second attempt's
        line(upstream_header_time="-"),  # the engine never answered (502)
        line(upstream_header_time=""),  # not proxied
        COMPLETION.replace(',"upstream_header_time":"0.182"', "") + "\n",  # an older line
        UNAUTHORIZED + "\n",
    )
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    samples = scrape(metrics)
    blue = (("colour", "blue"),)
    assert samples[("llmhost_gateway_first_byte_seconds_count", blue)] == 2
    assert samples[("llmhost_gateway_first_byte_seconds_sum", blue)] == pytest.approx(0.124)
    assert samples[("llmhost_gateway_first_byte_seconds_bucket", (*blue, ("le", "0.01")))] == 1
    assert samples[("llmhost_gateway_first_byte_seconds_bucket", (*blue, ("le", "0.1")))] == 1
    assert samples[("llmhost_gateway_first_byte_seconds_bucket", (*blue, ("le", "0.25")))] == 2
    assert auditexporter.FIRST_BYTE_BUCKETS[0] == 0.01
    assert auditexporter.FIRST_BYTE_BUCKETS[-1] == 30
    # Every line is still a request, older ones included.
    assert total(samples, "llmhost_gateway_requests_total") == 6


@pytest.mark.parametrize(
    ("upstream_status", "retried"),
    [("502, 200", True), ("502, 502", True), ("200", False), ("502", False), ("", False)],
)
def test_the_retry_counter_counts_requests_sent_again(upstream_status: str, retried: bool):
    metrics = Metrics()
    metrics.add_lines([line(upstream_status=upstream_status, colour="green").encode()])
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_upstream_retries_total", L(colour="green"))] == int(retried)


def test_labels_are_escaped(log: Path):
    metrics = Metrics()
    metrics.add_lines([line(identity='team "a"\\b').encode()])
    samples = scrape(metrics)
    assert samples[
        (
            "llmhost_gateway_requests_total",
            L(identity='team "a"\\b', colour="blue", status="200"),
        )
    ]
    assert 'identity="team \\"a\\"\\\\b"' in metrics.render()


# -- following the file ------------------------------------------------------------------------


def test_starts_at_the_end_of_an_existing_log_unless_from_start(log: Path):
    append(log, COMPLETION + "\n", COMPLETION + "\n")
    metrics = Metrics()
    tailer = Tailer(str(log), metrics)
    tailer.poll()
    assert total(scrape(metrics), "llmhost_gateway_requests_total") == 0
    append(log, UNAUTHORIZED + "\n")
    tailer.poll()
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_audit_lines_read_total", ())] == 1
    assert total(samples, "llmhost_gateway_requests_total") == 1


def test_a_log_that_appears_later_is_read_from_its_start(log: Path):
    metrics = Metrics()
    tailer = Tailer(str(log), metrics)
    tailer.poll()
    append(log, COMPLETION + "\n", UNAUTHORIZED + "\n")
    tailer.poll()
    assert total(scrape(metrics), "llmhost_gateway_requests_total") == 2


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(log: Path):
    metrics, clock = Metrics(), Clock()
    tailer = Tailer(str(log), metrics, from_start=True, grace_s=30, clock=clock)
    append(log, line(identity="a1"), line(identity="a2"))
    tailer.poll()
    append(log, line(identity="a3"))  # written after the last poll, before the rename
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)  # logrotate: rename ...
    tailer.poll()  # (no file at the path for a moment: still reading the old one)
    assert scrape(metrics)[("llmhost_gateway_audit_up_reason", L(reason="missing"))] == 1
    append(log, line(identity="b1"), line(identity="b2"))  # ... create; nginx reopens later
    append(rotated, line(identity="a4"))  # nginx still writing to the old file
    tailer.poll()
    append(rotated, line(identity="a5"))  # and once more, within the grace period
    append(log, line(identity="b3"))
    clock.now += 10
    tailer.poll()
    clock.now += 30  # the grace period is over: the old file is read a last time and closed
    append(rotated, line(identity="a6"))
    tailer.poll()
    assert tailer.rotated == []
    append(rotated, line(identity="a7"))  # never seen: nginx has long reopened
    append(log, line(identity="b4"))
    tailer.poll()
    samples = scrape(metrics)
    counted = {
        dict(labels)["identity"]: value
        for (name, labels), value in samples.items()
        if name == "llmhost_gateway_requests_total"
    }
    # every line once: nothing lost, nothing counted twice
    assert counted == {i: 1 for i in ("a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2", "b3", "b4")}
    assert samples[("llmhost_gateway_audit_reopens_total", L(cause="rotated"))] == 1
    assert samples[("llmhost_gateway_audit_reopens_total", L(cause="truncated"))] == 0
    assert samples[("llmhost_gateway_audit_up", ())] == 1
    tailer.close()


def test_two_rotations_within_the_grace_period(log: Path):
    metrics, clock = Metrics(), Clock()
    tailer = Tailer(str(log), metrics, from_start=True, clock=clock)
    for generation in range(3):
        append(log, line(identity=f"g{generation}"))
        tailer.poll()
        if generation < 2:
            os.rename(log, log.with_name(f"{log.name}.{generation}"))
            append(log, "")
    counted = scrape(metrics)
    assert total(counted, "llmhost_gateway_requests_total") == 3
    assert counted[("llmhost_gateway_audit_reopens_total", L(cause="rotated"))] == 2


def test_truncation_is_followed_from_the_start_without_double_counting(log: Path):
    metrics = Metrics()
    tailer = Tailer(str(log), metrics, from_start=True)
    append(log, line(identity="a1"), line(identity="a2"), line(identity="a3"))
    tailer.poll()
    log.write_text("")  # copytruncate
    tailer.poll()
    append(log, line(identity="b1"))  # shorter than what was read before
    tailer.poll()
    append(log, line(identity="b2"))
    tailer.poll()
    samples = scrape(metrics)
    counted = {
        dict(labels)["identity"]: value
        for (name, labels), value in samples.items()
        if name == "llmhost_gateway_requests_total"
    }
    assert counted == {"a1": 1, "a2": 1, "a3": 1, "b1": 1, "b2": 1}
    assert samples[("llmhost_gateway_audit_reopens_total", L(cause="truncated"))] == 1


def test_a_line_written_in_two_pieces_is_counted_once_when_complete(log: Path):
    metrics = Metrics()
    tailer = Tailer(str(log), metrics, from_start=True)
    whole = line()
    append(log, whole[:40])
    tailer.poll()
    assert scrape(metrics)[("llmhost_gateway_audit_lines_read_total", ())] == 0
    append(log, whole[40:])
    tailer.poll()
    samples = scrape(metrics)
    assert total(samples, "llmhost_gateway_requests_total") == 1
    assert samples[("llmhost_gateway_audit_lines_skipped_total", ())] == 0


def test_malformed_lines_are_skipped_and_counted(log: Path):
    bad = [
        "not json at all\n",
        "[1, 2, 3]\n",
        '{"time":"2025-03-04T10:15:30+00:00"\n',  # cut off
        line(status="200"),  # a string
        line(status=True),
        line(status=42),
        line(request_time="0.5"),
        line(request_time=-1),
        line(request_bytes=1.5),
        line(time="yesterday"),
        line(time="2025-03-04T10:15:30"),  # no offset
        line(identity=None),
        line(upstream_header_time=0.1),  # a number where nginx writes a string
        COMPLETION.replace('"colour":"blue",', "") + "\n",
        "[" * 100_000 + "\n",  # deep enough to overflow the JSON parser's recursion
    ]
    append(log, COMPLETION + "\n", *bad, "\n", "   \n")
    with log.open("ab") as handle:
        handle.write(b'{"identity":"\xff\xfe"}\n')  # not UTF-8
    append(log, UNAUTHORIZED + "\n")
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    samples = scrape(metrics)
    skipped = len(bad) + 1
    assert samples[("llmhost_gateway_audit_lines_skipped_total", ())] == skipped
    assert samples[("llmhost_gateway_audit_lines_read_total", ())] == skipped + 2  # blanks: not
    assert total(samples, "llmhost_gateway_requests_total") == 2


def test_a_runaway_line_is_dropped_and_counted_once(log: Path, monkeypatch):
    monkeypatch.setattr(auditexporter, "MAX_LINE", 2 * len(COMPLETION))
    monkeypatch.setattr(auditexporter, "READ_CHUNK", 64)  # the line arrives in pieces
    append(log, COMPLETION + "\n", "x" * 10 * len(COMPLETION) + "\n", COMPLETION + "\n")
    metrics = Metrics()
    Tailer(str(log), metrics, from_start=True).poll()
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_audit_lines_skipped_total", ())] == 1
    assert total(samples, "llmhost_gateway_requests_total") == 2


def test_a_missing_log_is_audit_up_0_with_the_reason(log: Path):
    metrics = Metrics()
    tailer = Tailer(str(log), metrics)
    tailer.poll()
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_audit_up", ())] == 0
    assert samples[("llmhost_gateway_audit_up_reason", L(reason="missing"))] == 1
    append(log, COMPLETION + "\n")
    tailer.poll()
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_audit_up", ())] == 1
    assert not [k for k in samples if k[0] == "llmhost_gateway_audit_up_reason"]


def test_a_directory_at_the_log_path_is_not_a_file(log: Path):
    log.mkdir()
    metrics = Metrics()
    Tailer(str(log), metrics).poll()
    assert scrape(metrics)[("llmhost_gateway_audit_up_reason", L(reason="not_a_file"))] == 1


def test_an_unreadable_log_is_permission_denied(log: Path, monkeypatch):
    append(log, COMPLETION + "\n")
    log.chmod(0)
    if (
        os.geteuid() == 0
    ):  # root reads a file whatever its mode: refuse the open as the kernel would

        def refuse(path: str, *args: Any, **kwargs: Any) -> Any:
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(auditexporter, "open", refuse, raising=False)
    metrics = Metrics()
    Tailer(str(log), metrics).poll()
    samples = scrape(metrics)
    assert samples[("llmhost_gateway_audit_up_reason", L(reason="permission_denied"))] == 1
    assert samples[("llmhost_gateway_audit_up", ())] == 0


# -- cardinality -------------------------------------------------------------------------------


def test_identities_past_the_cap_are_folded_into_other_and_the_empty_one_is_kept():
    metrics = Metrics(max_identities=2)
    names = ["alice", "bob", "carol", "alice", "dave", "bob", "carol"]
    metrics.add_lines([line(identity=n).encode() for n in names])
    metrics.add_lines([(UNAUTHORIZED + "\n").encode()] * 3)
    samples = scrape(metrics)
    counted = {
        dict(labels)["identity"]: value
        for (name, labels), value in samples.items()
        if name == "llmhost_gateway_requests_total"
    }
    assert counted == {"alice": 2, "bob": 2, "_other": 3, "": 3}
    assert samples[("llmhost_gateway_audit_identities_folded_total", ())] == 3
    identities = {
        dict(labels).get("identity") for (_, labels) in samples if "identity" in dict(labels)
    }
    assert identities == {"alice", "bob", "_other", ""}
    assert auditexporter.DEFAULT_MAX_IDENTITIES == 1000


def test_colours_are_capped_too():
    metrics = Metrics()
    colours = [f"c{i}" for i in range(auditexporter.MAX_COLOURS + 3)]
    metrics.add_lines([line(colour=c).encode() for c in colours])
    samples = scrape(metrics)
    seen = {dict(labels)["colour"] for (n, labels) in samples if n.endswith("retries_total")}
    assert len(seen) == auditexporter.MAX_COLOURS + 1 and "_other" in seen


# -- serving -----------------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[str, Metrics]]:
    metrics = Metrics()
    server = auditexporter.make_server(("127.0.0.1", 0), metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", metrics
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_the_server_answers_with_the_log_missing(served, log: Path):
    base, metrics = served
    tailer = Tailer(str(log), metrics)
    tailer.poll()
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(body)
    assert samples[("llmhost_gateway_audit_up", ())] == 0
    assert samples[("llmhost_gateway_audit_up_reason", L(reason="missing"))] == 1
    append(log, COMPLETION + "\n")
    tailer.poll()
    samples = parse(get(f"{base}/metrics")[2])
    assert samples[("llmhost_gateway_audit_up", ())] == 1
    assert get(f"{base}/other")[0] == 404


def run_tool(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmhost.onhost", "audit-exporter", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_tool_serves_the_log_and_stops_cleanly_on_sigterm(log: Path):
    append(log, COMPLETION + "\n")
    process = run_tool(
        "--log", str(log), "--listen", "127.0.0.1:0", "--from-start", "--poll-interval", "0.05"
    )
    try:
        assert process.stderr is not None
        started = process.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", started)
        assert match, started
        base = f"http://127.0.0.1:{match[1]}"
        append(log, UNAUTHORIZED + "\n")
        for _ in range(100):
            samples = parse(get(f"{base}/metrics")[2])
            if total(samples, "llmhost_gateway_requests_total") == 2:
                break
            time.sleep(0.05)
        assert total(samples, "llmhost_gateway_requests_total") == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_tool_is_registered_and_its_help_names_it(capsys):
    assert app.TOOLS["audit-exporter"] == "llmhost.onhost.auditexporter"
    with pytest.raises(SystemExit) as exit_:
        app.main(["audit-exporter", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: onhost.pyz audit-exporter")
    assert "--from-start" in help_text and "--max-identities" in help_text
    args = auditexporter.build_parser().parse_args([])
    assert args.listen == ("0.0.0.0", 9114) and args.log == auditexporter.DEFAULT_LOG


@pytest.mark.parametrize("listen", ["9114", "host:", ":9114", "host:99999", "host:port"])
def test_a_bad_listen_address_is_refused(listen: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        auditexporter.build_parser().parse_args(["--listen", listen])
    assert exit_.value.code == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_an_ipv6_listen_address_is_served():
    listen = auditexporter.build_parser().parse_args(["--listen", "[::1]:0"]).listen
    assert listen == ("::1", 0)
    try:
        server = auditexporter.make_server(listen, Metrics())
    except OSError as error:
        pytest.skip(f"no IPv6 loopback on this machine: {error}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = get(f"http://[::1]:{server.server_address[1]}/metrics")
        assert status == 200 and "llmhost_gateway_audit_up" in body
    finally:
        server.shutdown()
        server.server_close()
