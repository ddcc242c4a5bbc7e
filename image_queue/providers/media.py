"""Image bytes in and out of providers: reference images to upload, results to hand back.

Results are checked by their magic bytes, never trusted by name or content type: anything that is
not PNG, JPEG or WebP is a bad_response. Large results are decoded once and the text dropped early
so a worker holds as few copies of a tens-of-megabytes image as it can.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson

from image_queue.errors import BadResponseError, LocalInputError, ProviderError
from image_queue.http import HTTP, clean_text, safe_url
from image_queue.providers.base import GenerationResult, sniff_image_format
from image_queue.providers.checks import MAX_UPLOAD_BYTES, is_url

MAX_USAGE_BYTES = 8 * 1024
_COLON_QUOTE = re.compile(rb'\s*:\s*"')
_FAST_PATH_TRIES = 4
MAX_REVISED_PROMPT_CHARS = 4000


def load_reference(http: HTTP, ref: str, *, what: str = "reference image",
                   max_bytes: int = MAX_UPLOAD_BYTES) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) of a local image file or an http(s) URL (downloaded, size-limited)."""
    if is_url(ref):
        shown = safe_url(ref, http.secrets)
        try:
            data = http.download(ref, stage="input", max_bytes=min(max_bytes, http.config.max_download_bytes))
        except ProviderError as exc:
            raise LocalInputError(f"{what} {shown} could not be downloaded: {exc.message}") from exc
        name = PurePosixPath(urlsplit(ref).path).name
    else:
        shown = repr(ref)
        path = Path(ref).expanduser()
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise LocalInputError(f"{what} {shown} is {size} bytes; the API takes at most {max_bytes}")
            data = path.read_bytes()
        except OSError as exc:
            raise LocalInputError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
        name = path.name
    fmt = sniff_image_format(data)
    if fmt is None:
        raise LocalInputError(f"{what} {shown} is not a PNG, JPEG or WebP image")
    if not name or "." not in name:
        name = f"image.{fmt}"
    return clean_text(name, limit=100), data, f"image/{fmt}"


def decode_b64_image(text: str, *, stage: str = "decode", http_status: int | None = None) -> bytes:
    """Base64 (or a `data:image/...;base64,` URL) to bytes, once."""
    if text[:5].lower() == "data:":
        text = text[text.find(",") + 1:]
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise BadResponseError(f"the image is not valid base64 ({len(text)} characters)", stage=stage,
                               http_status=http_status) from exc


def parse_with_image(raw: bytes | bytearray, key: str, holder: Callable[[Any], Any], *, want_image: bool = True,
                     http_status: int | None = None, stage: str = "decode") -> tuple[Any, bytes | None]:
    """Parse a JSON document holding one big base64 image string under `key`; (payload, image bytes).

    The image string is cut out of the raw bytes and decoded straight from them, and only the small
    rest is parsed: orjson on a 40 MB document would peak at many times its size, and a str copy
    plus bytes would double it. `holder(payload)` returns the object that held the image; if the cut
    was somewhere else (an odd document) the whole body is parsed the ordinary way. The returned
    payload no longer has `key` in the holder; the image is None if there was none (or not wanted).
    """
    marker = b'"' + key.encode() + b'"'
    pos, tries = raw.find(marker), 0
    while pos >= 0 and tries < _FAST_PATH_TRIES:
        m = _COLON_QUOTE.match(raw, pos + len(marker))
        end = raw.find(b'"', m.end()) if m else -1
        if m and end > m.end() + 64 and raw.find(b"\\", m.end(), end) < 0:
            tries += 1
            start = m.end()
            try:
                payload = orjson.loads(bytes(raw[:start]) + bytes(raw[end:]))
            except orjson.JSONDecodeError:
                break
            held = holder(payload)
            if isinstance(held, dict) and held.get(key) == "":
                held.pop(key)
                if not want_image:
                    return payload, None
                try:
                    with memoryview(raw) as view:
                        return payload, binascii.a2b_base64(view[start:end])
                except binascii.Error as exc:
                    raise BadResponseError(f"the image is not valid base64 ({end - start} characters)", stage=stage,
                                           http_status=http_status) from exc
        pos = raw.find(marker, pos + 1)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadResponseError(f"answer is not valid JSON ({len(raw)} bytes)", stage=stage,
                               http_status=http_status) from exc
    held = holder(payload)
    value = held.pop(key, None) if isinstance(held, dict) else None
    if not want_image or not isinstance(value, str) or not value:
        return payload, None
    return payload, decode_b64_image(value, stage=stage, http_status=http_status)


def image_result(data: bytes, *, http: HTTP, model: str | None, mode: str, http_status: int | None,
                 usage: Any = None, revised_prompt: Any = None, details: dict[str, Any] | None = None) -> GenerationResult:
    """A GenerationResult for image bytes the API returned; bad_response unless PNG, JPEG or WebP."""
    fmt = sniff_image_format(data)
    if fmt is None:
        raise BadResponseError(
            f"the API returned {len(data)} bytes that are not a PNG, JPEG or WebP image (starting {data[:8]!r})",
            http_status=http_status)
    return GenerationResult(
        image=data,
        format=fmt,
        model=model,
        mode=mode,
        attempts=max(1, http.billable_attempts),
        usage=safe_usage(usage),
        revised_prompt=clean_text(revised_prompt, http.secrets, MAX_REVISED_PROMPT_CHARS) if revised_prompt else None,
        http_status=http_status,
        details=details or {},
    )


def safe_usage(usage: Any) -> dict[str, Any] | None:
    """The API's usage object if it is a small JSON object, else None (it goes into result.json)."""
    if not isinstance(usage, dict):
        return None
    try:
        if len(orjson.dumps(usage)) > MAX_USAGE_BYTES:
            return None
    except TypeError:
        return None
    return usage


def unwrap(payload: Any, *keys: str) -> Any:
    """Gateways sometimes wrap the answer in `data`: return the object that holds any of `keys`."""
    if isinstance(payload, dict) and not any(k in payload for k in keys) and isinstance(payload.get("data"), dict):
        return payload["data"]
    return payload
