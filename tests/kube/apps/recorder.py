"""A subscriber that appends every request it receives (its `ce-` headers and body) as one JSON line to
$RECORD_FILE, then answers 202; the file outlives the pod, so a test sees what was delivered even after the
revision scaled back to zero. Standard library only; listens on $PORT."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
RECORD_FILE = os.environ["RECORD_FILE"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        attributes = {k[3:].lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
        line = json.dumps({"host": self.headers.get("Host"), "attributes": attributes, "data": body.decode()})
        with LOCK, open(RECORD_FILE, "a") as out:
            out.write(line + "\n")
        self.answer(202)

    def do_GET(self) -> None:
        self.answer(200, b"recorder\n")

    def answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
