"""The production eval on a host, against a stand-in engine on loopback: the active colour's
answers scored as the gate scores them, compared with the gate's, written for node exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llmhost.onhost import app, evaldrift
from llmhost.onhost.layout import EVAL_METRICS_NAME

ITEMS = [
    {"id": "capital", "prompt": "The capital of France is", "max_tokens": 4,
     "check": {"contains": "Paris"}},
    {"id": "hello", "prompt": "Say hello", "max_tokens": 2, "check": {"exact": "hello"}},
    {"id": "number", "prompt": "A number:", "max_tokens": 3, "check": {"regex": r"^\s*\d+"}},
    {"id": "json", "prompt": "JSON please", "max_tokens": 8,
     "check": {"json_schema": {"type": "object", "required": ["a"]}}},
    {"id": "new", "prompt": "Added after the gate", "max_tokens": 2, "check": {"contains": "x"}},
]  # fmt: skip
# What the engine answers now, by prompt.
ANSWERS = {
    "The capital of France is": " Paris.",  # as at the gate
    "Say hello": "hello!",  # drifted, and fails its check now: regressed
    "A number:": " 42",  # drifted ("7" at the gate), still passes
    "JSON please": '{"a": 1}',  # as at the gate
    "Added after the gate": "x",  # not compared: the gate never asked it
}
GATE_ANSWERS = {"capital": " Paris.", "hello": "hello", "number": " 7", "json": '{"a": 1}'}


class Engine(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, str]] = {}
    status = 200
    delay_s = 0.0
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        time.sleep(type(self).delay_s)
        text = type(self).answers.get(body["prompt"], "")
        reply = json.dumps({"choices": [{"text": text}]}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def engine() -> Iterator[tuple[int, type[Engine]]]:
    handler = type("Handler", (Engine,), {"answers": dict(ANSWERS), "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def state(active: str | None = "blue") -> dict[str, Any]:
    return {
        "active": active,
        "colours": {
            "blue": {"id": "r1", "model": "tiny", "served_model_name": "tiny-chat"},
            "green": {"id": "r0", "model": "tiny"},
        },
        "history": [],
    }


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """state.json, the deploy's eval set, the gate's record of r1 and the metrics directory."""
    paths = {
        "state": tmp_path / "state.json",
        "eval_set": tmp_path / "eval-set.json",
        "gates": tmp_path / "gates",
        "out": tmp_path / "textfile" / "llmhost-eval",
    }
    paths["state"].write_text(json.dumps(state()))
    document = {"version": 1, "model": "tiny", "eval_set_sha256": "0" * 64, "items": ITEMS}
    paths["eval_set"].write_text(json.dumps(document))
    gate = paths["gates"] / "r1"
    gate.mkdir(parents=True)
    asked = [{k: i[k] for k in ("id", "prompt", "max_tokens")} for i in ITEMS[:4]]
    (gate / "eval-items.json").write_text(json.dumps(asked))
    (gate / "result.json").write_text(json.dumps({"eval": {"answers": GATE_ANSWERS}}))
    paths["out"].mkdir(parents=True)
    return paths


def run(host: dict[str, Path], port: int, *extra: str) -> int:
    return app.main([
        "eval-drift", "--ports", f"blue={port},green=9",
        "--state", str(host["state"]), "--eval-set", str(host["eval_set"]),
        "--gates", str(host["gates"]), "--out-dir", str(host["out"]),
        "--timeout", "5", "--tolerance", "0.05", *extra,
    ])  # fmt: skip


def samples(host: dict[str, Path]) -> dict[str, float]:
    """Each sample of the textfile, by its name and labels."""
    found = {}
    for line in (host["out"] / EVAL_METRICS_NAME).read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


LABELS = '{release="r1",colour="blue"}'


def test_the_active_colour_is_scored_and_compared_with_its_gate(host, engine, capsys):
    port, _ = engine
    before = time.time()
    assert run(host, port) == 0
    found = samples(host)
    finished = found.pop(f"llmhost_eval_last_run_timestamp_seconds{LABELS}")
    assert before <= finished <= time.time()
    assert found.pop(f"llmhost_eval_duration_seconds{LABELS}") >= 0
    assert found == {
        "llmhost_eval_up": 1,
        "llmhost_eval_tolerance": 0.05,
        f"llmhost_eval_score{LABELS}": 0.8,  # "hello!" is not "hello"
        f"llmhost_eval_cases{LABELS}": 5,
        f"llmhost_eval_compared_cases{LABELS}": 4,  # not the item added since the gate
        f"llmhost_eval_drift_cases{LABELS}": 2,  # hello, number
        f"llmhost_eval_regressed_cases{LABELS}": 1,  # hello: passed at the gate, fails now
    }
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == ["hello"] and summary["drifted"] == ["hello", "number"]
    assert summary["regressed"] == ["hello"]
    last = json.loads((host["out"] / evaldrift.LAST_RUN).read_text())
    hello = next(r for r in last["results"] if r["id"] == "hello")
    assert hello["gate_answer"] == "hello" and hello["answer"] == "hello!"


def test_the_engine_is_asked_exactly_as_the_gate_asks_it(host, engine):
    """The gate's requests (runtimectl generate): one at a time, temperature 0, seed 0."""
    port, handler = engine
    assert run(host, port) == 0
    assert [r["prompt"] for r in handler.requests] == [i["prompt"] for i in ITEMS]
    for request, item in zip(handler.requests, ITEMS, strict=True):
        assert request == {
            "path": "/v1/completions",
            "model": "tiny-chat",  # the served model name the state records
            "prompt": item["prompt"],
            "max_tokens": item["max_tokens"],
            "temperature": 0,
            "seed": 0,
        }


def test_the_textfile_is_replaced_whole_and_passes_promtool(host, engine):
    port, _ = engine
    assert run(host, port) == 0
    path = host["out"] / EVAL_METRICS_NAME
    first = path.stat().st_ino
    assert run(host, port) == 0
    assert path.stat().st_ino != first, "a new file renamed over the old, never rewritten"
    assert sorted(p.name for p in host["out"].iterdir()) == [evaldrift.LAST_RUN, EVAL_METRICS_NAME]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    if shutil.which("promtool"):
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=path.read_text(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_failed_run_says_why_and_keeps_the_last_complete_runs_series(host, engine, capsys):
    port, handler = engine
    assert run(host, port) == 0
    handler.status = 500
    assert run(host, port) == 1
    found = samples(host)
    assert found["llmhost_eval_up"] == 0
    assert found['llmhost_eval_up_reason{reason="engine error"}'] == 1
    assert found[f"llmhost_eval_score{LABELS}"] == 0.8, "the last score stays visible"
    assert "engine error: port" in capsys.readouterr().err


def test_an_engine_that_does_not_answer_is_unreachable_or_too_slow(host, engine):
    port, handler = engine
    handler.delay_s = 2
    assert run(host, port, "--timeout", "0.5") == 1
    assert samples(host)['llmhost_eval_up_reason{reason="engine timeout"}'] == 1
    assert run(host, 9) == 1  # nothing listens on the discard port
    found = samples(host)
    assert found['llmhost_eval_up_reason{reason="engine unreachable"}'] == 1
    assert not any(name.startswith("llmhost_eval_score") for name in found), "no run completed"


def test_nothing_serves_before_the_first_cutover_and_that_is_no_failure(host, engine):
    port, handler = engine
    host["state"].write_text(json.dumps(state(active=None)))
    assert run(host, port) == 0
    assert samples(host) == {"llmhost_eval_up": 1, "llmhost_eval_tolerance": 0.05}
    assert handler.requests == []


@pytest.mark.parametrize(
    "record", [None, {"eval": None}, {"eval": ["not", "answers"]}, "not JSON"]
)  # fmt: skip
def test_without_the_gates_answers_the_score_is_kept_and_drift_is_not_guessed(host, engine, record):
    port, _ = engine
    result = host["gates"] / "r1" / "result.json"
    if record is None:
        shutil.rmtree(result.parent)  # a release cut over with the gate off
    else:
        result.write_text(record if isinstance(record, str) else json.dumps(record))
    assert run(host, port) == 0
    found = samples(host)
    assert found[f"llmhost_eval_score{LABELS}"] == 0.8
    assert found[f"llmhost_eval_compared_cases{LABELS}"] == 0
    assert not any("drift" in name or "regressed" in name for name in found)


def test_the_other_colour_is_scored_when_it_is_the_active_one(host, engine):
    port, handler = engine
    host["state"].write_text(json.dumps(state(active="green")))
    assert app.main([
        "eval-drift", "--ports", f"blue=9,green={port}", "--state", str(host["state"]),
        "--eval-set", str(host["eval_set"]), "--gates", str(host["gates"]),
        "--out-dir", str(host["out"]),
    ]) == 0  # fmt: skip
    assert handler.requests[0]["model"] == "tiny"
    assert 'llmhost_eval_score{release="r0",colour="green"}' in samples(host)


@pytest.mark.parametrize(
    "document",
    [{"version": 2, "items": ITEMS}, {"version": 1, "items": []},
     {"version": 1, "items": [{"id": "a", "prompt": "p", "max_tokens": 1, "check": {"x": 1}}]},
     {"version": 1, "items": ["not an item"]}, ["not", "an", "object"]],
)  # fmt: skip
def test_a_broken_eval_set_file_fails_the_run_naming_it(host, engine, document, capsys):
    port, handler = engine
    host["eval_set"].write_text(json.dumps(document))
    assert run(host, port) == 1
    assert samples(host)['llmhost_eval_up_reason{reason="eval set invalid"}'] == 1
    assert str(host["eval_set"]) in capsys.readouterr().err
    assert handler.requests == []


def test_bad_ports_or_an_unwritable_directory_cannot_run(host, engine, capsys):
    port, _ = engine
    assert app.main(["eval-drift", "--ports", "blue=1"]) == 2
    shutil.rmtree(host["out"])
    assert run(host, port) == 2
    assert "cannot write the metrics" in capsys.readouterr().err


def test_the_shipped_archive_runs_the_eval_with_the_standard_library_alone(host, engine, tmp_path):
    """As the unit runs it: `python3 onhost.pyz eval-drift` (here isolated: -I -S)."""
    from roles._common import onhost

    port, _ = engine
    archive = tmp_path / "onhost.pyz"
    archive.write_bytes(onhost.build_app())
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(archive), "eval-drift", "--ports", f"blue={port},green=9",
         "--state", str(host["state"]), "--eval-set", str(host["eval_set"]),
         "--gates", str(host["gates"]), "--out-dir", str(host["out"])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert samples(host)[f"llmhost_eval_score{LABELS}"] == 0.8
    assert json.loads(done.stdout)["regressed"] == ["hello"]
