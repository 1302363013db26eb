"""event-display: a Service that prints every CloudEvent it receives (as Knative's event-display sample does)
and shows the last ones at `GET /`. Standard library only; listens on $PORT."""

import json
import os
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECENT: deque[dict[str, object]] = deque(maxlen=50)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        attributes = {k[3:].lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
        event = {"path": self.path, "attributes": attributes, "data": body.decode(errors="replace")}
        with LOCK:
            RECENT.append(event)
        print("☁️  cloudevent received on", self.path, json.dumps(attributes, sort_keys=True), flush=True)
        print("   data:", event["data"][:500], flush=True)
        self.answer(202, b"")

    def do_GET(self) -> None:
        with LOCK:
            body = json.dumps(list(RECENT), indent=2).encode()
        self.answer(200, body, "application/json")

    def answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
