"""A tiny OpenAI-compatible chat server on the loopback interface, for tests and the benchmark.

It answers ``POST /v1/chat/completions`` with a caption made from a hash of the request's media, so the same
clip always gets the same caption, and a ``reply`` hook can script malformed answers or HTTP errors. Requests
are bounded in size and every request body is kept for inspection.
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

MAX_BODY_BYTES = 32 * 1024 * 1024
LOOPBACK = "127.0.0.1"

# reply(request_json, request_number) -> (HTTP status, caption text)
ReplyFn = Callable[[dict, int], tuple[int, str]]


def media_digest(request: dict) -> str:
    h = hashlib.sha256()
    for message in request.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            if part.get("type") != "text":
                h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:8]


def valid_caption(request: dict, _n: int) -> tuple[int, str]:
    """A well-formed caption: a visual sentence with one utterance, then the audio description."""
    tag = media_digest(request)
    parts = request["messages"][0]["content"]
    images = sum(1 for p in parts if p.get("type") == "image_url")
    if images == 0:
        return 200, f"<S>clip {tag} says hello<E> Audio: A calm adult male voice, neutral accent, medium pitch."
    return 200, (f"A test pattern shown in {images} frames slides across the screen while a voice says "
                 f"<S>clip {tag} says hello<E> and the colours shift. Audio: A steady tone with a calm adult "
                 f"voice, medium pitch, even prosody, neutral emotion, moderate rate.")


class FakeCaptionServer:
    def __init__(self, reply: ReplyFn = valid_caption) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if length <= 0 or length > MAX_BODY_BYTES:
                    return self._send(413, {"error": {"message": f"body of {length} bytes refused"}})
                try:
                    request = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                with server._lock:
                    server.requests.append(request)
                    n = len(server.requests)
                status, text = server.reply(request, n)
                if status != 200:
                    return self._send(status, {"error": {"message": text}})
                self._send(200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": request.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeCaptionServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
