"""The `mock` provider: a real provider that makes a local placeholder PNG, for demos and tests.

Its results always say provider "mock" so a placeholder can never pass for a real image. Knobs
(task fields): `mock_sleep` seconds before answering, `mock_output_text` printed to stdout,
`mock_command` run with `sh -c` first (non-zero exit fails the task), `mock_exit_code` makes the
worker process exit with that code (a crashing worker). If the environment names a file in
IMAGE_QUEUE_MOCK_LOG, every call appends one JSON line to it: the mock's own record of calls made.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
import zlib
from typing import ClassVar

import orjson

from image_queue.errors import ProviderError
from image_queue.sizes import parse_size
from image_queue.providers.base import GenerationRequest, GenerationResult, Provider

MAX_SIDE = 8192


class MockExit(SystemExit):
    """Raised to make the worker exit with a chosen code, like a crashed worker would."""


def mock_dimensions(size: str | None) -> tuple[int, int]:
    parsed = parse_size(size) if size else None
    if parsed is None:
        return 1024, 1024
    shape, w, h = parsed
    if shape == "ratio":
        scale = (1024 * 1024 / (w * h)) ** 0.5
        w, h = max(16, round(w * scale / 16) * 16), max(16, round(h * scale / 16) * 16)
    return min(w, MAX_SIDE), min(h, MAX_SIDE)


def placeholder_png(width: int, height: int, seed: str) -> bytes:
    """A valid RGB PNG: a gradient in a colour derived from `seed`, banded so it is visibly an image."""
    digest = hashlib.sha256(seed.encode()).digest()
    r0, g0, b0 = digest[0], digest[1], digest[2]
    row_variants = []
    for band in range(8):
        shade = 40 + band * 25
        row = bytearray(b"\x00")
        for x in range(0, width):
            t = x * 255 // max(1, width - 1)
            row += bytes(((r0 + t) // 2 % 256, (g0 + shade) // 2 % 256, (b0 + 255 - t) // 2 % 256))
        row_variants.append(bytes(row))
    band_height = max(1, height // 8)
    raw = b"".join(row_variants[min(7, y // band_height)] for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


class MockProvider(Provider):
    kind: ClassVar[str] = "mock"
    needs_network: ClassVar[bool] = False

    def generate(self, request: GenerationRequest, *, client: object = None) -> GenerationResult:
        extra = request.extra
        log_path = os.environ.get("IMAGE_QUEUE_MOCK_LOG")
        if log_path:
            line = orjson.dumps({"task_id": request.task_id, "task_key": request.task_key, "pid": os.getpid(), "t": time.time()})
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line + b"\n")
            finally:
                os.close(fd)
        if extra.get("mock_output_text") is not None:
            sys.stdout.write(str(extra["mock_output_text"]) + "\n")
            sys.stdout.flush()
        if extra.get("mock_command"):
            sys.stdout.flush()
            code = subprocess.call(["sh", "-c", extra["mock_command"]])
            if code != 0:
                raise ProviderError(
                    f"mock_command exited with code {code}", category="upstream_failure", stage="mock_command"
                )
        if extra.get("mock_sleep"):
            time.sleep(float(extra["mock_sleep"]))
        if extra.get("mock_exit_code"):
            raise MockExit(int(extra["mock_exit_code"]))
        width, height = mock_dimensions(request.size)
        image = placeholder_png(width, height, request.task_key + request.prompt)
        return GenerationResult(
            image=image,
            format="png",
            model=request.model or "mock-image-1",
            mode=request.mode,
            details={"width": width, "height": height},
        )
