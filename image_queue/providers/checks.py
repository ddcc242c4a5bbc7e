"""What each API accepts, checked before any money is spent (used by the providers' `check`).

Every function either returns the value to send or raises UsageError with a reason a user can act
on. `generate` calls the same functions, so what `check` approved is exactly what gets sent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from image_queue.errors import LocalInputError, ProviderError, UsageError
from image_queue.sizes import parse_size

MAX_PROMPT_CHARS = 32000
MAX_OPENAI_IMAGES = 16
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
CLASSIC_SIZES = ("1024x1024", "1536x1024", "1024x1536")
GPT2_MIN_PIXELS, GPT2_MAX_PIXELS, GPT2_MAX_EDGE = 655_360, 8_294_400, 3840
RATIO_TOLERANCE = 0.15  # map W:H / WxH to a listed ratio only if the aspect is within 15 %


class LocalFileError(UsageError):
    """A reference image or mask on disk that cannot be used (reported as local_input by generate)."""


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


def check_prompt(prompt: str | None, *, limit: int = MAX_PROMPT_CHARS) -> None:
    if prompt is None or not prompt.strip():
        raise UsageError("a prompt is required")
    if len(prompt) > limit:
        raise UsageError(f"the prompt is {len(prompt)} characters; this API takes at most {limit}")


def check_local_file(path: str, *, what: str = "reference image", max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """A local image file exists, is a readable regular file and is not too big to upload."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LocalFileError(f"{what} {path!r} does not exist")
    if not p.is_file():
        raise LocalFileError(f"{what} {path!r} is not a regular file")
    if not os.access(p, os.R_OK):
        raise LocalFileError(f"{what} {path!r} is not readable")
    size = p.stat().st_size
    if size == 0:
        raise LocalFileError(f"{what} {path!r} is empty")
    if size > max_bytes:
        raise LocalFileError(f"{what} {path!r} is {size} bytes; the API takes at most {max_bytes}")


def check_references(images: tuple[str, ...], mask: str | None, *, limit: int = MAX_OPENAI_IMAGES) -> None:
    """OpenAI kinds: ≤ `limit` images, local files or http(s) URLs; a mask needs an image."""
    if len(images) > limit:
        raise UsageError(f"{len(images)} reference images given; this API takes at most {limit}")
    for ref in images:
        if not is_url(ref):
            check_local_file(ref)
    if mask is not None:
        if not images:
            raise UsageError("a mask needs at least one reference image to edit")
        if not is_url(mask):
            check_local_file(mask, what="mask")


def check_url_references(images: tuple[str, ...], mask: str | None, *, kind: str, low: int, high: int) -> None:
    """Async gateways take reference images as public URLs only."""
    if mask is not None:
        raise UsageError(f"provider kind {kind} does not take a mask")
    if not images:
        return
    if not low <= len(images) <= high:
        raise UsageError(f"{len(images)} reference images given; {kind} takes {low} to {high}")
    local = [ref for ref in images if not is_url(ref)]
    if local:
        raise UsageError(f"{kind} takes reference images as http(s) URLs only, not local files like {local[0]!r}; "
                         "upload them somewhere public or use an openai-images provider")


def _parsed(size: str) -> tuple[str, int, int] | None:
    try:
        return parse_size(size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _round16(value: float) -> int:
    return max(16, int(round(value / 16.0)) * 16)


def gpt_image_2_size(width: int, height: int) -> str | None:
    """None if WxH obeys the gpt-image-2 rules, else the reason it does not."""
    if width % 16 or height % 16:
        return "both sides must be multiples of 16"
    if max(width, height) > 3 * min(width, height):
        return "the aspect ratio must be between 1:3 and 3:1"
    if max(width, height) > GPT2_MAX_EDGE:
        return f"the longest edge must be at most {GPT2_MAX_EDGE}"
    if not GPT2_MIN_PIXELS <= width * height <= GPT2_MAX_PIXELS:
        return f"the total pixels ({width * height:,}) must be between {GPT2_MIN_PIXELS:,} and {GPT2_MAX_PIXELS:,}"
    return None


def _nearest_classic(w: int, h: int) -> str:
    target = math.log(w / h)
    return min(CLASSIC_SIZES, key=lambda s: abs(math.log(int(s.split("x")[0]) / int(s.split("x")[1])) - target))


def openai_size(size: str | None, model: str | None) -> str | None:
    """The `size` to send to an OpenAI-style API for `model`, or None to send none.

    gpt-image-2: any WxH within its rules; a W:H ratio becomes a WxH (long edge 1536, 1:1 -> 1024x1024).
    gpt-image-1 family: the three classic sizes; a ratio maps to the nearest one.
    Other models (gateways): WxH passes through; a ratio maps to the nearest classic size.
    """
    if size is None:
        return None
    parsed = _parsed(size)
    if parsed is None:
        return "auto"
    shape, w, h = parsed
    name = (model or "").lower()
    if "gpt-image-2" in name:
        if shape == "ratio":
            if max(w, h) > 3 * min(w, h):
                raise UsageError(f"size {size!r}: gpt-image-2 takes aspect ratios between 1:3 and 3:1")
            if w == h:
                return "1024x1024"
            long_edge, short = 1536, _round16(1536 * min(w, h) / max(w, h))
            w, h = (long_edge, short) if w > h else (short, long_edge)
        reason = gpt_image_2_size(w, h)
        if reason:
            raise UsageError(f"size {size!r} is not valid for {model}: {reason} (or use auto)")
        return f"{w}x{h}"
    if shape == "ratio":
        return _nearest_classic(w, h)
    if "gpt-image-1" in name and f"{w}x{h}" not in CLASSIC_SIZES:
        raise UsageError(f"size {size!r} is not valid for {model}; use one of {', '.join(CLASSIC_SIZES)} or auto")
    return f"{w}x{h}"


def nearest_ratio(size: str | None, allowed: tuple[str, ...], *, kind: str) -> str | None:
    """The listed `W:H` ratio to send for a WxH or W:H size (None for no size; 'auto' if listed)."""
    if size is None:
        return None
    parsed = _parsed(size)
    if parsed is None:
        if "auto" in allowed:
            return "auto"
        raise UsageError(f"{kind} does not take size auto; use one of {', '.join(allowed)}")
    _, w, h = parsed
    ratios = [r for r in allowed if ":" in r]
    target = math.log(w / h)

    def distance(ratio: str) -> float:
        a, b = ratio.split(":")
        return abs(math.log(int(a) / int(b)) - target)

    best = min(ratios, key=distance)
    if distance(best) > math.log(1 + RATIO_TOLERANCE):
        raise UsageError(f"size {size!r} is not close to any aspect ratio {kind} takes: {', '.join(allowed)}")
    return best


def check_output_options(output_format: str | None, output_compression: int | None, background: str | None) -> None:
    """Combinations the OpenAI image models refuse."""
    fmt = output_format or "png"
    if output_compression is not None and fmt not in ("jpeg", "webp"):
        raise UsageError("output_compression needs output_format jpeg or webp")
    if background == "transparent" and fmt == "jpeg":
        raise UsageError("a transparent background needs output_format png or webp, not jpeg")


def recheck(provider: Any, request: Any, config: Any) -> None:
    """generate()'s own guard: run check() again and report a refusal as a ProviderError.

    The supervisor already ran check(); this catches what changed since (a file deleted) or a
    request that skipped it, before anything is sent.
    """
    try:
        provider.check(request, config)
    except LocalFileError as exc:
        raise LocalInputError(exc.message) from exc
    except UsageError as exc:
        raise ProviderError(exc.message, category="invalid_request", stage="input") from exc
