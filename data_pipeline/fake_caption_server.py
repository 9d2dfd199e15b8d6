"""A tiny OpenAI-compatible chat server on the loopback interface, for tests, the benchmark and trying the
pipeline without a model:

    python -m data_pipeline.fake_caption_server --port 8000    # then caption.base_url=http://127.0.0.1:8000/v1

It answers ``POST /v1/chat/completions`` with a caption made from a hash of the request's media, so the same
clip always gets the same caption, and a ``reply`` hook can script malformed answers or HTTP errors. Requests
are bounded in size and every request body is kept for inspection.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Sequence

import soundfile as sf

from data_pipeline.filters.voice import has_speech

MAX_BODY_BYTES = 32 * 1024 * 1024
LOOPBACK = "127.0.0.1"

# reply(request_json, request_number) -> (HTTP status, caption text) or (status, text, finish_reason)
ReplyFn = Callable[[dict, int], tuple]


def media_digest(request: dict) -> str:
    h = hashlib.sha256()
    for message in request.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            if part.get("type") != "text":
                h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:8]


def request_has_speech(request: dict) -> bool:
    """Whether the request's audio holds speech, by the pipeline's own voice-activity check (the fake "hears"
    like a model would, so a tone gets no <S>…<E> words)."""
    for part in request["messages"][0]["content"]:
        data = None
        if part.get("type") == "input_audio":
            data = part["input_audio"]["data"]
        elif part.get("type") == "audio_url":
            data = part["audio_url"]["url"].split(",", 1)[1]
        if data is not None:
            audio, rate = sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32", always_2d=False)
            return has_speech(audio, rate)
    return False


def valid_caption(request: dict, _n: int) -> tuple[int, str]:
    """A well-formed caption: a visual sentence (with one utterance when the audio has speech), then the audio
    description."""
    tag = media_digest(request)
    parts = request["messages"][0]["content"]
    images = sum(1 for p in parts if p.get("type") == "image_url")
    if request_has_speech(request):
        said, heard = f" while a voice says <S>clip {tag} says hello<E>", ("A calm adult voice, medium pitch, even "
                                                                           "prosody, neutral emotion, moderate rate.")
    else:
        said, heard = f" in clip {tag}", "A steady electronic tone and faint room noise."
    if images == 0:
        return 200, f"{said.strip()} Audio: {heard}" if "<S>" in said else f"Audio: {heard} ({tag})"
    return 200, f"A test pattern shown in {images} frames slides across the screen{said}. Audio: {heard}"


class FakeCaptionServer:
    def __init__(self, reply: ReplyFn = valid_caption, port: int = 0) -> None:
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
                status, text, *finish = server.reply(request, n)  # a hook may add a finish_reason
                if status != 200:
                    return self._send(status, {"error": {"message": text}})
                self._send(200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": request.get("model"),
                                 "choices": [{"index": 0, "finish_reason": finish[0] if finish else "stop",
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

        self._httpd = ThreadingHTTPServer((LOOPBACK, port), Handler)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Serve deterministic test captions on 127.0.0.1 (OpenAI chat format).")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    with FakeCaptionServer(port=args.port) as server:
        print(f"fake caption server at {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
