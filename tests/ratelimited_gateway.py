"""A loopback OpenAI Images endpoint that enforces an images-per-window limit like OpenAI does:
over the limit it answers 429 `rate_limit_exceeded` with a `retry-after-ms` hint. It records every
request's arrival time and answer, for rate-limit tests and the tier-1 benchmark.

    with RateLimitedGateway(limit=5, window=60.0, latency=0.5) as gw: ...  # gw.base_url ends in /v1
"""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from image_queue.providers.mock import placeholder_png

PNG_B64 = base64.b64encode(placeholder_png(32, 32, "rate")).decode()


class RateLimitedGateway:
    def __init__(self, *, limit: int, window: float, latency: float = 0.0, first_429_ms: int | None = None) -> None:
        self.limit, self.window, self.latency = limit, window, latency
        self.first_429_ms = first_429_ms  # answer the very first request 429 with this hint, then serve
        self.accepted: list[float] = []
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                status, hint = gw._admit()
                if status == 429:
                    body = orjson.dumps({"error": {"message": "Rate limit reached for images per minute",
                                                   "type": "requests", "code": "rate_limit_exceeded"}})
                    headers = {"retry-after-ms": str(hint)}
                else:
                    time.sleep(gw.latency)
                    body = orjson.dumps({"created": int(time.time()), "data": [{"b64_json": PNG_B64}]})
                    headers = {}
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _admit(self) -> tuple[int, int]:
        with self.lock:
            now = time.time()
            if self.first_429_ms is not None and not self.log:
                self.log.append({"t": now, "status": 429})
                return 429, self.first_429_ms
            recent = [t for t in self.accepted if t > now - self.window]
            if len(recent) >= self.limit:
                hint = int((recent[0] + self.window - now) * 1000) + 1
                self.log.append({"t": now, "status": 429})
                return 429, hint
            self.accepted.append(now)
            self.log.append({"t": now, "status": 200})
            return 200, 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "RateLimitedGateway":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
