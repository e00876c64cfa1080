"""Soak statistics and gates, and the streaming client against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from llmhost.onhost import soak


def test_percentiles_interpolate_between_closest_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert soak.percentile(values, 50) == 2.5
    assert soak.percentile(values, 100) == 4.0
    assert soak.percentile([7.0], 99) == 7.0
    assert soak.percentile([], 50) is None


def test_zero_errors_bound_the_rate_at_about_three_over_n():
    assert soak.error_rate_upper_bound(0, 300) == pytest.approx(3 / 300, rel=0.01)
    assert soak.minimum_requests(0.01) == 299
    assert soak.minimum_requests(0.001) == 2995
    assert soak.error_rate_upper_bound(5, 100) > 0.05
    assert soak.error_rate_upper_bound(0, 300, confidence=0.99) > soak.error_rate_upper_bound(
        0, 300
    )


def test_gates_fail_with_reasons_and_too_few_requests_cannot_pass_an_error_gate():
    samples = [
        soak.Sample(start=0, ok=True, ttft=0.1, e2e=0.5, tokens=10, itl=[0.04] * 9)
        for _ in range(100)
    ]
    summary = soak.summarise(samples, duration_s=10)
    assert summary["ttft_p95_ms"] == pytest.approx(100)
    assert summary["output_tokens_per_s"] == 100
    assert soak.evaluate(summary, soak.Gates(ttft_p95_ms=200, min_tokens_per_s=50)) == []
    failures = soak.evaluate(summary, soak.Gates(ttft_p95_ms=50, error_rate_max=0.01))
    assert failures[0].startswith("ttft_p95_ms 100")
    assert "needs at least 299" in failures[1]
    failed = [soak.Sample(start=0, error="timeout") for _ in range(5)]
    many = soak.summarise(samples * 3 + failed, duration_s=10)
    assert many["errors"] == {"timeout": 5}
    assert "error rate bound" in soak.evaluate(many, soak.Gates(error_rate_max=0.01))[0]


class Streamer(BaseHTTPRequestHandler):
    """A runtime stand-in: streams `tokens` SSE chunks, `gap` seconds apart (chunked)."""

    protocol_version = "HTTP/1.1"
    tokens = 5
    gap = 0.01
    status = 200
    hang = False
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"auth": self.headers.get("Authorization"), **request})
        if self.hang:
            time.sleep(5)
        if self.status != 200:
            self.send_response(self.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for number in range(self.tokens):
            event = json.dumps({"choices": [{"text": f" t{number}"}]})
            self._chunk(f"data: {event}\n\n".encode())
            time.sleep(self.gap)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture
def runtime() -> Iterator[tuple[str, type[Streamer]]]:
    handler = type("Handler", (Streamer,), {"seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()


def test_a_streamed_answer_is_timed_token_by_token(runtime):
    url, handler = runtime
    target = soak.Target(url=url, model="m", api_key="secret-key")
    sample = asyncio.run(soak.one_request(target, "Hello", 5))
    assert sample.ok and sample.tokens == 5 and len(sample.itl) == 4
    assert all(gap >= 0.009 for gap in sample.itl)
    assert sample.ttft is not None and sample.e2e is not None and sample.e2e >= sample.ttft
    assert handler.seen[0]["auth"] == "Bearer secret-key" and handler.seen[0]["stream"] is True


def test_errors_are_counted_by_kind_and_a_hung_runtime_times_out(runtime):
    url, handler = runtime
    handler.status = 503
    assert asyncio.run(soak.one_request(soak.Target(url, "m"), "x", 1)).error == "http-503"
    handler.status, handler.hang = 200, True
    started = time.monotonic()
    hung = asyncio.run(soak.one_request(soak.Target(url, "m", timeout_s=0.5), "x", 1))
    assert hung.error == "timeout" and time.monotonic() - started < 3
    closed = asyncio.run(soak.one_request(soak.Target("http://127.0.0.1:9", "m"), "x", 1))
    assert closed.error == "connection"


def test_closed_and_open_loop_send_exactly_the_requests_asked(runtime):
    url, handler = runtime
    handler.gap = 0.0
    target = soak.Target(url, "m")
    closed = asyncio.run(
        soak.closed_loop(target, ["a", "b"], concurrency=4, requests=20, max_tokens=3)
    )
    assert len(closed) == 20 and all(s.ok for s in closed)
    assert {r["prompt"] for r in handler.seen} == {"a", "b"}
    start = time.monotonic()
    opened = asyncio.run(soak.open_loop(target, ["a"], rate_per_s=200, requests=30, max_tokens=2))
    assert len(opened) == 30 and all(s.ok for s in opened)
    assert time.monotonic() - start < 5


def soak_cli(*args: str):
    from click.testing import CliRunner

    from llmhost.cli import main

    return CliRunner().invoke(main, ["soak", *args])


def test_a_lenient_gate_passes_with_a_valid_result_and_a_report_with_plots(runtime, tmp_path):
    import jsonschema

    from llmhost.soakreport import schema

    url, handler = runtime
    handler.gap = 0.0
    out = tmp_path / "reports"
    result = soak_cli(
        url,
        "--model",
        "m",
        "--requests",
        "40",
        "--concurrency",
        "4",
        "--gate",
        "ttft_p95_ms=5000",
        "--gate",
        "min_tokens_per_s=1",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "result.json").read_text())
    jsonschema.validate(document, schema())
    assert document["passed"] and document["summary"]["requests"] == 40
    report = (out / "report.html").read_text()
    assert report.count("<svg") == 3
    assert report.count('class="point"') == 40 and 'class="bar"' in report
    assert 'class="line"' in report and "Soak PASS" in report


def test_an_impossible_gate_fails_and_too_few_requests_cannot_pass_an_error_gate(runtime):
    url, handler = runtime
    handler.gap = 0.0
    strict = soak_cli(url, "--model", "m", "--requests", "10", "--gate", "ttft_p95_ms=0.001")
    assert strict.exit_code == 1 and "ttft_p95_ms" in strict.output
    few = soak_cli(url, "--model", "m", "--requests", "10", "--gate", "error_rate_max=0.01")
    assert few.exit_code == 1 and "needs at least 299" in few.output


def test_a_hung_runtime_fails_the_gate_on_its_timeout_and_nothing_answering_cannot_run(runtime):
    url, handler = runtime
    handler.gap = 0.0
    state = {"calls": 0}
    original = handler.do_POST

    def hang_after_first(self) -> None:
        state["calls"] += 1
        if state["calls"] > 1:
            type(self).hang = True
        original(self)

    handler.do_POST = hang_after_first
    started = time.monotonic()
    hung = soak_cli(
        url, "--model", "m", "--requests", "4", "--timeout", "1", "--gate", "error_rate_max=0.5"
    )
    assert hung.exit_code == 1, hung.output
    assert '"timeout": 4' in hung.output
    assert time.monotonic() - started < 15
    dead = soak_cli("http://127.0.0.1:9", "--model", "m")
    assert dead.exit_code == 2 and "nothing usable answers" in dead.output
    unknown = soak_cli(url, "--model", "m", "--gate", "speed=3")
    assert unknown.exit_code == 2 and "unknown gate" in unknown.output


def test_the_stop_rule_ends_a_run_once_errors_alone_have_failed_it():
    assert soak.allowed_errors(300, 0.01) == 0, "1 error in 300 already bounds above 1 %"
    assert soak.allowed_errors(1000, 0.01) >= 3
    assert soak.allowed_errors(100, 0.01) == -1, "too few requests for the claim at all"
    stop = soak.stop_when_failed(300, soak.Gates(error_rate_max=0.01))
    done = [soak.Sample(start=0, ok=True)]
    assert not stop(done)
    done.append(soak.Sample(start=1, ok=True))
    assert not stop(done)
    done.append(soak.Sample(start=2, error="connection"))
    assert stop(done) and stop(done), "counted once, and the verdict stays"
    assert not soak.stop_when_failed(300, soak.Gates())([soak.Sample(start=0)])


def test_a_dead_runtime_ends_a_gate_run_after_a_few_requests_not_all():
    target = soak.Target("http://127.0.0.1:9", "m")
    stop = soak.stop_when_failed(300, soak.Gates(error_rate_max=0.01))
    done = asyncio.run(soak.closed_loop(target, ["a"], 4, 300, 3, stop=stop))
    assert 1 <= len(done) <= 4 and all(s.error == "connection" for s in done)


def test_the_host_side_soak_prints_samples_the_control_side_reads_back(runtime, capsys, tmp_path):
    url, handler = runtime
    handler.gap = 0.0
    prompts = tmp_path / "prompts.json"
    prompts.write_text('["one", "two"]')
    arguments = ["--url", url, "--model", "m", "--requests", "6", "--concurrency", "2"]
    assert soak.main([*arguments, "--prompts", str(prompts), "--max-tokens", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    samples = [soak.sample_from(s) for s in printed["samples"]]
    assert len(samples) == 6 and all(s.ok and s.tokens == 5 for s in samples)
    assert {r["prompt"] for r in handler.seen} == {"one", "two"}
    assert soak.summarise(samples, printed["duration_s"])["ok"] == 6
