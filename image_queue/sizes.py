"""Image sizes as users write them: `WxH`, `W:H` or `auto`. Free of pydantic: workers import it."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*([x×X:])\s*(\d{1,5})\s*$")


def parse_size(size: str) -> tuple[str, int, int] | None:
    """'1536x1024' -> ('px', 1536, 1024); '16:9' -> ('ratio', 16, 9); 'auto' -> None. Raises ValueError."""
    if size.strip().lower() == "auto":
        return None
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(f"size {size!r} is not WxH (e.g. 1536x1024), W:H (e.g. 16:9) or auto")
    w, sep, h = int(m.group(1)), m.group(2), int(m.group(3))
    if w <= 0 or h <= 0:
        raise ValueError(f"size {size!r} has a zero side")
    return ("ratio" if sep == ":" else "px", w, h)
