"""A local stand-in for a hosted OpenAI-compatible API, for tests only.

The edge's last fallback tier is a provider's API on the internet, which the test
machines cannot reach. ``HostedApi`` answers what the edge forwards there, over HTTPS
with a certificate the test gives: ``POST /v1/completions`` and
``/v1/chat/completions``, plain or streamed (``"stream": true``: server-sent events
ending in ``data: [DONE]``), each with a ``usage`` object, and 401 for any key but its
own. It records each request's path and headers (never its body), so a test can tell
what reached it and that the client's own key did not.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

ANSWER = "hosted"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class HostedApi:
    """``with HostedApi(key, cert, key_file, address) as api:`` serves until the block ends."""

    api_key: str
    certificate: Path  # PEM: the server's certificate (its chain after it)
    private_key: Path
    address: str = "0.0.0.0"
    port: int = 0  # 0: any free port; the bound one is in ``port`` after start
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> HostedApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests read ``seen``
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                api.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("Authorization") != f"Bearer {api.api_key}":
                    self.reply(401, {"error": {"message": "invalid key"}})
                    return
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    self.reply(404, {"error": {"message": f"no {self.path}"}})
                    return
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    self.reply(400, {"error": {"message": "not JSON"}})
                    return
                usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
                if request.get("stream"):
                    self.stream(usage)
                else:
                    self.reply(200, {"choices": [{"text": ANSWER, "index": 0}], "usage": usage})

            def reply(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, usage: dict[str, int]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = [
                    {"choices": [{"text": ANSWER, "index": 0}]},
                    {"choices": [], "usage": usage},
                ]
                for event in events:
                    self.chunk(f"data: {json.dumps(event)}\n\n".encode())
                self.chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")

            def chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        self._server = ThreadingHTTPServer((self.address, self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, self.private_key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> HostedApi:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
