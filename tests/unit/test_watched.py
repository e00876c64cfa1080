"""Before a cutover the host asks a monitoring host's Prometheus whether it is watched."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from llmhost.onhost import runtimectl


class FakePrometheus(BaseHTTPRequestHandler):
    up: ClassVar[str | None] = "1"
    groups: ClassVar[list[str]] = list(runtimectl.ALERT_GROUPS)

    def do_GET(self) -> None:
        if self.path.startswith("/api/v1/query"):
            result = [] if self.up is None else [{"metric": {}, "value": [0, self.up]}]
            body: dict[str, Any] = {"status": "success", "data": {"result": result}}
        else:
            body = {"status": "success", "data": {"groups": [{"name": g} for g in self.groups]}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    FakePrometheus.up, FakePrometheus.groups = "1", list(runtimectl.ALERT_GROUPS)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_host_scraped_with_the_rules_loaded_is_watched(prometheus):
    assert runtimectl.watched_by(prometheus, "gpu-1") is None
    runtimectl.wait_watched([prometheus], "gpu-1", 0)


@pytest.mark.parametrize(
    ("up", "groups", "why"),
    [
        ("0", list(runtimectl.ALERT_GROUPS), "no successful scrape of gpu-1's node exporter"),
        (None, list(runtimectl.ALERT_GROUPS), "no successful scrape"),
        ("1", ["llmhost-hosts"], "has not loaded the alert rules"),
    ],
)
def test_a_host_not_scraped_or_without_rules_is_not_watched_and_nothing_is_switched(
    prometheus, up, groups, why
):
    FakePrometheus.up, FakePrometheus.groups = up, groups
    assert why in (runtimectl.watched_by(prometheus, "gpu-1") or "")
    with pytest.raises(RuntimeError, match="no monitoring host watches gpu-1"):
        runtimectl.wait_watched([prometheus], "gpu-1", 0)


def test_one_watching_prometheus_of_several_is_enough(prometheus):
    runtimectl.wait_watched(["http://127.0.0.1:9", prometheus], "gpu-1", 0)
    assert "127.0.0.1:9" in (runtimectl.watched_by("http://127.0.0.1:9", "gpu-1") or "")
