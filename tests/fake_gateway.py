"""A loopback fake of the four image APIs image_queue speaks, for tests and benchmarks.

In tests:

    with FakeGateway() as gw:
        gw.script("generations", error(429, "rate_limit_exceeded", headers={"retry-after-ms": "100"}))
        ...  # point a provider at gw.openai_base (or gw.base_url for image2/runapi)
        assert len(gw.calls("generations")) == 2

As a process (the benchmarks reuse it):  python tests/fake_gateway.py --port 8765 --latency 1.0
It prints `listening on http://127.0.0.1:PORT` and serves until killed. POST /_control/script with
{"route": ..., "replies": [...]} scripts faults over HTTP; GET /_control/calls lists requests seen.

Routes: generations, edits, responses (OpenAI style, under any prefix such as /v1), image2.create,
image2.poll, runapi.create, runapi.poll, files. Each route answers with a real image by default;
`script(route, *replies)` queues replies that are used first, one per request:
  {"status", "json" | "body", "headers", "content_type"}   a literal answer
  {"hang": seconds}                                         say nothing for that long, then hang up
  {"echo_auth": True, "status": 401}                        an error body echoing the auth headers
  {"mode": ...}                                             a variant of the default answer:
      generations/edits: "url" (a `url` instead of `b64_json`), "jpeg" (a JPEG image)
      responses: "text_only" (text and `tools: []`), "rate_limit_text", "partials" (with
                 "partials": N), "stream_error" (with "code"/"message"), "no_tool_text"
      image2.create / runapi.create: "fail" (with "reason"), "wrapped" (answer inside `data`),
                 "task_id" (runapi: the id as `task_id`)
"""

from __future__ import annotations

import argparse
import base64
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

try:
    from image_queue.providers.mock import placeholder_png
except ImportError:  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from image_queue.providers.mock import placeholder_png

ROUTES = ("generations", "edits", "responses", "image2.create", "image2.poll", "runapi.create", "runapi.poll", "files")


def tiny_jpeg() -> bytes:
    """A valid 1x1 grey baseline JPEG (quantisation all ones, one-code Huffman tables)."""
    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1 for symbol 0
    return (b"\xff\xd8"
            + segment(0xFFE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + segment(0xFFDB, b"\x00" + b"\x01" * 64)
            + segment(0xFFC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00")
            + segment(0xFFC4, b"\x00" + one_code)
            + segment(0xFFC4, b"\x10" + one_code)
            + segment(0xFFDA, b"\x01\x01\x00\x00\x3f\x00")
            + b"\x3f" + b"\xff\xd9")


def error(status: int, code: str | None = None, message: str = "fake error", *, type: str | None = None,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A scripted OpenAI-style error answer."""
    return {"status": status, "json": {"error": {"message": message, "type": type or code, "param": None, "code": code}},
            "headers": headers or {}}


def hang(seconds: float) -> dict[str, Any]:
    return {"hang": seconds}


def invalid_json() -> dict[str, Any]:
    return {"status": 200, "body": b'{"data": [{"b64_json": "iVBOR', "content_type": "application/json"}


@dataclass
class Recorded:
    """One request as the gateway saw it."""

    route: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)  # name -> (filename, type, bytes)
    t: float = 0.0


@dataclass
class _Task:
    id: str
    kind: str  # image2 | runapi
    polls_left: int
    fail_reason: str | None
    seed: str


class FakeGateway:
    """The fake server; start() / close(), or use it as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 image_size: tuple[int, int] = (64, 48), pending_polls: int = 1) -> None:
        self.latency = latency
        self.image_size = image_size
        self.pending_polls = pending_polls
        self._lock = threading.Lock()
        self._scripts: dict[str, list[dict[str, Any]]] = {r: [] for r in ROUTES}
        self._calls: list[Recorded] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._tasks: dict[str, _Task] = {}
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.gateway = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # --- control -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base(self) -> str:
        return self.base_url + "/v1"

    def start(self) -> "FakeGateway":
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-gateway", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeGateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def script(self, route: str, *replies: dict[str, Any]) -> None:
        """Queue replies for `route`, used one per request before the default answer."""
        assert route in ROUTES, f"unknown route {route!r}; routes: {ROUTES}"
        with self._lock:
            self._scripts[route].extend(replies)

    def calls(self, route: str | None = None) -> list[Recorded]:
        with self._lock:
            return [c for c in self._calls if route is None or c.route == route]

    def add_file(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at /files/NAME; returns its URL."""
        with self._lock:
            self._files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    def image(self, seed: str, fmt: str = "png") -> bytes:
        return tiny_jpeg() if fmt == "jpeg" else placeholder_png(*self.image_size, seed)

    # --- internals -----------------------------------------------------------------------------
    def _next_script(self, route: str) -> dict[str, Any] | None:
        with self._lock:
            return self._scripts[route].pop(0) if self._scripts[route] else None

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._calls.append(rec)

    def _new_task(self, kind: str, seed: str, fail_reason: str | None) -> _Task:
        task = _Task(uuid.uuid4().hex[:16], kind, self.pending_polls, fail_reason, seed)
        with self._lock:
            self._tasks[task.id] = task
        return task

    def _poll(self, task_id: str) -> tuple[_Task | None, bool]:
        """(the task, whether it is still pending); each poll uses up one pending answer."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None and task.polls_left > 0:
                task.polls_left -= 1
                return task, True
            return task, False


def route_of(method: str, path: str) -> str | None:
    if method == "POST":
        for suffix, route in (("/images/generations", "generations"), ("/images/edits", "edits"),
                              ("/responses", "responses"),
                              ("/api/v1/user_task/asyncCreateWithCost", "image2.create"),
                              ("/api/v1/gpt_image_2/text_to_image", "runapi.create"),
                              ("/api/v1/gpt_image_2/edit_image", "runapi.create")):
            if path.endswith(suffix):
                return route
    if method == "GET":
        if "/api/v1/user_task/get/passAuth/" in path:
            return "image2.poll"
        if "/api/v1/gpt_image_2/text_to_image/" in path or "/api/v1/gpt_image_2/edit_image/" in path:
            return "runapi.poll"
        if path.startswith("/files/"):
            return "files"
    return None


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, str, bytes]]]]:
    """multipart/form-data -> (text fields, file fields), repeated names kept in order."""
    msg = BytesParser(policy=HTTP_POLICY).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    form: dict[str, list[str]] = {}
    files: dict[str, list[tuple[str, str, bytes]]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.setdefault(name, []).append((filename, part.get_content_type(), payload))
        else:
            form.setdefault(name, []).append(payload.decode("utf-8"))
    return form, files


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGateway/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def gw(self) -> FakeGateway:
        return self.server.gateway  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- plumbing --------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, status: int, body: bytes | str, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(obj), headers=headers)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, body = split.path, self._read_body()
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        route = route_of(method, path)
        rec = Recorded(route or "unknown", method, path, parse_qs(split.query),
                       {k.lower(): v for k, v in self.headers.items()}, body, t=time.monotonic())
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("application/json") and body:
            try:
                rec.json = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
        elif ctype.startswith("multipart/form-data"):
            rec.form, rec.files = parse_multipart(ctype, body)
        self.gw._record(rec)
        if route is None:
            return self._json({"error": {"message": f"no route for {method} {path}", "code": "not_found"}}, 404)
        if route != "files" and self.gw.latency:
            time.sleep(self.gw.latency)
        reply = self.gw._next_script(route) or {}
        if "hang" in reply:
            self.gw._stop.wait(float(reply["hang"]))
            self.close_connection = True
            return
        if reply.get("echo_auth"):
            auth, key = self.headers.get("authorization", ""), self.headers.get("x-api-key", "")
            return self._json({"error": {"message": f"Incorrect API key provided: {auth} (x-api-key: {key})",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}},
                              reply.get("status", 401))
        if "status" in reply:
            payload = reply.get("body", orjson.dumps(reply.get("json")) if "json" in reply else b"")
            return self._send(reply["status"], payload, reply.get("content_type", "application/json"),
                              reply.get("headers"))
        getattr(self, "_" + route.replace(".", "_"))(rec, reply.get("mode"), reply)

    def _control(self, method: str, path: str, body: bytes) -> None:
        if path == "/_control/script" and method == "POST":
            spec = orjson.loads(body)
            self.gw.script(spec["route"], *spec["replies"])
            return self._json({"ok": True})
        if path == "/_control/calls":
            return self._json([{"route": c.route, "method": c.method, "path": c.path, "json": c.json}
                               for c in self.gw.calls()])
        self._json({"error": "unknown control path"}, 404)

    def _auth_ok(self, header: str) -> bool:
        value = self.headers.get(header, "")
        return bool(value[7:].strip()) if header == "authorization" else bool(value.strip())

    # --- OpenAI Images -------------------------------------------------------------------------------
    def _generations(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        if not self._auth_ok("authorization"):
            return self._json({"error": {"message": "missing key", "type": "invalid_request_error",
                                         "code": "invalid_api_key"}}, 401)
        fields = rec.json if rec.json is not None else {k: v[-1] for k, v in rec.form.items()}
        prompt = str(fields.get("prompt", ""))
        fmt = "jpeg" if mode == "jpeg" or fields.get("output_format") == "jpeg" else "png"
        image = self.gw.image(prompt, fmt)
        item: dict[str, Any] = {"revised_prompt": f"revised: {prompt}"}
        if mode == "url":
            item["url"] = self.gw.add_file(f"{uuid.uuid4().hex[:12]}.{fmt}", image, f"image/{fmt}")
        else:
            item["b64_json"] = base64.b64encode(image).decode()
        self._json({"created": int(time.time()), "data": [item], "output_format": fmt,
                    "usage": {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110}})

    _edits = _generations

    # --- OpenAI Responses ------------------------------------------------------------------------------
    def _responses(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        if not self._auth_ok("authorization"):
            return self._json({"error": {"message": "missing key", "code": "invalid_api_key"}}, 401)
        body = rec.json or {}
        tool = (body.get("tools") or [{}])[0]
        prompt = body.get("input") if isinstance(body.get("input"), str) else "with images"
        image = self.gw.image(str(prompt), "jpeg" if tool.get("output_format") == "jpeg" else "png")
        call = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
                "result": base64.b64encode(image).decode(), "revised_prompt": f"revised: {prompt}",
                "size": tool.get("size", "1024x1024")}
        texts = {"text_only": "I cannot make images right now.",
                 "rate_limit_text": "Rate limit reached for images. Please try again in 30ms.",
                 "no_tool_text": "Here is a poem instead of a picture."}
        output: list[dict[str, Any]] = [] if mode in texts else [call]
        output.append({"type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": texts.get(mode, "Here is your image.")}]})
        response = {"id": "resp_1", "object": "response", "status": "completed", "model": body.get("model"),
                    "output": output, "tools": [] if mode in ("text_only", "rate_limit_text") else body.get("tools"),
                    "usage": {"input_tokens": 12, "output_tokens": 34, "total_tokens": 46}}
        if not body.get("stream"):
            return self._json(response)
        events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": {**response, "status": "in_progress", "output": []}})]
        if mode == "stream_error":
            events.append(("error", {"code": reply.get("code", "server_error"), "message": reply.get("message", "boom"),
                                     "param": None}))
        else:
            for i in range(int(reply.get("partials", tool.get("partial_images") or 0))):
                events.append(("response.image_generation_call.partial_image",
                               {"item_id": "ig_1", "output_index": 0, "partial_image_index": i,
                                "partial_image_b64": base64.b64encode(self.gw.image(f"partial{i}")).decode()}))
            if output and output[0] is call:
                events.append(("response.output_item.done", {"output_index": 0, "item": call}))
            events.append(("response.completed", {"response": response}))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for seq, (name, data) in enumerate(events):
                self.wfile.write(f"event: {name}\n".encode() + b"data: "
                                 + orjson.dumps({"type": name, "sequence_number": seq, **data}) + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    # --- async task gateways -----------------------------------------------------------------------------
    def _image2_create(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        if not self._auth_ok("x-api-key"):
            return self._json({"code": 401, "msg": "invalid x-api-key"}, 401)
        user_input = (rec.json or {}).get("user_input") or {}
        task = self.gw._new_task("image2", str(user_input.get("prompt")),
                                 reply.get("reason", "content rejected") if mode == "fail" else None)
        answer = {"id": task.id, "task_status": "pending", "cost": 1}
        self._json({"code": 0, "data": answer} if mode == "wrapped" else answer)

    def _image2_poll(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        task, pending = self.gw._poll(rec.path.rsplit("/", 1)[-1])
        if task is None:
            return self._json({"code": 404, "msg": "no such task"}, 404)
        if pending:
            return self._json({"id": task.id, "task_status": "pending"})
        if task.fail_reason:
            return self._json({"id": task.id, "task_status": "failed", "service_output": {"failReason": task.fail_reason}})
        url = self.gw.add_file(f"{task.id}.png", self.gw.image(task.seed))
        self._json({"id": task.id, "task_status": "success", "service_output": {"imgUrls": [url]}})

    def _runapi_create(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        if not self._auth_ok("authorization"):
            return self._json({"error": {"message": "Unauthorized", "code": "unauthorized"}}, 401)
        task = self.gw._new_task("runapi", str((rec.json or {}).get("prompt")),
                                 reply.get("reason", "generate failed") if mode == "fail" else None)
        key = "task_id" if mode == "task_id" else "id"
        answer = {key: task.id, "status": "pending"}
        self._json({"data": answer} if mode == "wrapped" else answer)

    def _runapi_poll(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        task, pending = self.gw._poll(rec.path.rsplit("/", 1)[-1])
        if task is None:
            return self._json({"error": {"message": "Not found"}}, 404)
        if pending:
            return self._json({"id": task.id, "status": "processing"})
        if task.fail_reason:
            return self._json({"id": task.id, "status": "failed", "error": task.fail_reason})
        url = self.gw.add_file(f"{task.id}.png", self.gw.image(task.seed))
        self._json({"id": task.id, "status": "completed", "images": [{"url": url}]})

    # --- files -------------------------------------------------------------------------------------
    def _files(self, rec: Recorded, mode: str | None, reply: dict[str, Any]) -> None:
        with self.gw._lock:
            found = self.gw._files.get(rec.path[len("/files/"):])
        if found is None:
            return self._send(404, b"not found", "text/plain")
        self._send(200, found[0], found[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake of the image APIs on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each API answer")
    parser.add_argument("--pending-polls", type=int, default=1, help="polls an async task stays pending")
    parser.add_argument("--image-size", default="64x48", help="WxH of the images it makes")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    gw = FakeGateway(host=args.host, port=args.port, latency=args.latency, image_size=(w, h),
                     pending_polls=args.pending_polls)
    print(f"listening on {gw.base_url}", flush=True)
    try:
        gw._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gw._server.server_close()


if __name__ == "__main__":
    main()
