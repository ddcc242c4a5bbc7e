"""A minimal fixed-latency OpenAI Images gateway on loopback, for the benchmarks.

    python bench/gateway.py --port 0 --latency 1.0 [--image 3840x2160 --noise]

Prints `listening on http://127.0.0.1:PORT` and serves until killed:
  POST <any prefix>/images/generations  waits --latency seconds, then answers one image as b64_json
  GET  /_calls                           every request so far: prompt, arrival and reply times (time.time())
  GET  /_info                            the sizes of the image and of the whole answer, in bytes
  POST /_reset                           forget the requests seen

The answer is built once at start-up (a noisy PNG is incompressible, so it is as big as a real 4K
image: ~25 MB of PNG, ~33 MB of base64), so serving costs the machine almost nothing and the
benchmark measures the client side. Only the standard library is used, so GNU parallel + curl and
image_queue are measured against exactly the same server. tests/fake_gateway.py is the fuller fake
(faults, every provider's routes); this one adds what the benchmarks need: wall-clock arrival times
over HTTP and a big incompressible image.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    """An RGB PNG: random pixels (incompressible, like a photo) or a flat grey (tiny)."""
    row_bytes = width * 3
    if noise:
        raw = b"".join(b"\x00" + os.urandom(row_bytes) for _ in range(height))
        level = 1  # zlib cannot shrink random bytes; don't spend time trying
    else:
        raw = (b"\x00" + b"\x80" * row_bytes) * height
        level = 6

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b"")


class Gateway(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, latency: float, image: bytes) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.latency = latency
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.answer = json.dumps({
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(image).decode()}],
            "usage": {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110},
        }).encode()
        self.image_bytes = len(image)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Gateway

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        if self.path == "/_calls":
            with self.server.lock:
                body = json.dumps(self.server.calls).encode()
            return self._send(200, body)
        if self.path == "/_info":
            info = {"image_bytes": self.server.image_bytes, "answer_bytes": len(self.server.answer)}
            return self._send(200, json.dumps(info).encode())
        self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/_reset":
            with self.server.lock:
                self.server.calls.clear()
            return self._send(200, b"{}")
        if not self.path.endswith("/images/generations"):
            return self._send(404, b'{"error": {"message": "not found", "code": "not_found"}}')
        if not self.headers.get("authorization", "").startswith("Bearer "):
            return self._send(401, b'{"error": {"message": "missing key", "code": "invalid_api_key"}}')
        try:
            prompt = json.loads(body).get("prompt")
        except ValueError:
            prompt = None
        time.sleep(self.server.latency)
        self._send(200, self.server.answer)
        with self.server.lock:
            self.server.calls.append({"prompt": prompt, "arrived": arrived, "replied": time.time(),
                                      "port": self.client_address[1]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds before each image answer")
    parser.add_argument("--image", default="64x64", help="WxH of the PNG returned")
    parser.add_argument("--noise", action="store_true", help="random pixels: an incompressible PNG")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.image.lower().split("x"))
    server = Gateway(args.port, args.latency, png(w, h, noise=args.noise))
    print(f"listening on http://127.0.0.1:{server.server_address[1]} image_bytes={server.image_bytes} "
          f"answer_bytes={len(server.answer)}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
