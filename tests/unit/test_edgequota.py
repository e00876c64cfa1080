"""The edge's quota pass: Prometheus asked, each team's state into HAProxy's map.

Prometheus and HAProxy's admin socket are small stand-ins here (an HTTP server with
Prometheus's answer format, a Unix socket answering as HAProxy does: a blank line when a
command was done); the real ones are in tests/e2e/test_edge.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from llmhost.onhost import edgequota

MAP = "/etc/haproxy/llmhost/teams-over-tokens.map"


def prometheus_answer(tokens: dict[str, float]) -> dict:
    result = [{"metric": {"team": t}, "value": [1.0, str(v)]} for t, v in tokens.items()]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prometheus() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(parse_qs(urlsplit(self.path).query)["query"][0])
            body = json.dumps(prometheus_answer({"research": 1200.0, "ops": 10.0})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", asked
    server.shutdown()


@pytest.fixture
def admin_socket(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    path = str(tmp_path / "admin.sock")
    received: list[str] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                line = connection.recv(65536).decode().strip()
                received.append(line)
                refused = "nosuchteam" in line
                connection.sendall(b"entry not found.\n\n" if refused else b"\n\n")

    threading.Thread(target=serve, daemon=True).start()
    yield path, received
    listener.close()


def test_each_team_with_a_quota_is_set_over_or_not_in_one_command(prometheus, admin_socket, capsys):
    url, asked = prometheus
    path, received = admin_socket
    argv = ["--map", MAP, "--socket", path, "--prometheus", url]
    quotas = ["--quota", "research=1000", "--quota", "ops=1000", "--quota", "idle=5"]
    assert edgequota.main([*argv, *quotas]) == 0
    assert asked == [edgequota.QUERY]
    assert received == [f"set map {MAP} idle 0; set map {MAP} ops 0; set map {MAP} research 1"]
    line = json.loads(capsys.readouterr().out)
    assert line["teams"]["research"] == {"tokens": 1200, "quota": 1000, "over": True}
    assert line["teams"]["idle"] == {"tokens": 0, "quota": 5, "over": False}


def test_the_first_prometheus_that_answers_is_used(prometheus, admin_socket):
    url, _ = prometheus
    path, received = admin_socket
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    argv = ["--map", MAP, "--socket", path, "--prometheus", down, "--prometheus", url]
    assert edgequota.main([*argv, "--quota", "research=5000"]) == 0
    assert received == [f"set map {MAP} research 0"]


def test_with_no_prometheus_answering_the_map_is_left_as_it_was(admin_socket, capsys):
    path, received = admin_socket
    argv = ["--map", MAP, "--socket", path, "--prometheus", "http://127.0.0.1:9"]
    assert edgequota.main([*argv, "--quota", "research=5", "--timeout", "1"]) == 1
    assert received == []
    assert "the map is left as it was" in capsys.readouterr().err


def test_a_refusal_by_haproxy_fails_the_pass_with_its_words(prometheus, admin_socket, capsys):
    url, _ = prometheus
    path, _ = admin_socket
    argv = ["--map", MAP, "--socket", path, "--prometheus", url]
    assert edgequota.main([*argv, "--quota", "nosuchteam=5"]) == 1
    assert "entry not found" in capsys.readouterr().err


def test_a_quota_that_is_not_team_equals_tokens_cannot_run(capsys):
    assert edgequota.main(["--map", MAP, "--socket", "/x", "--quota", "research"]) == 2
    assert "is not TEAM=TOKENS" in capsys.readouterr().err
