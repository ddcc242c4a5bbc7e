"""Policy for untrusted upstream text, retries and error classification (used by http.py).

Pure functions, no I/O: redact keys from any text an API sends back, decide how long to wait before
a retry (PROTOCOLS.md, after openai-python), and turn an HTTP status plus error body into our
ProviderError with a diagnosis category.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson

from image_queue.errors import HTTPStatusError, ProviderError

RETRY_AFTER_MAX_SECONDS = 120.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
MAX_ERROR_CHARS = 500
ERROR_BODY_BYTES = 64 * 1024  # enough for any JSON error; an HTML error page is cut here
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})
NEVER_RETRY_CATEGORIES = frozenset({"moderation_blocked", "quota_exhausted", "local_input"})
_MODERATION = ("moderation_blocked", "content_policy", "safety system", "safety_violation", "content_filter")
_QUOTA = (
    "insufficient_quota", "insufficient_credit", "insufficient_balance", "insufficient credit",
    "insufficient balance", "billing_hard_limit", "exceeded your current quota", "credits exhausted",
)
_OVERLOADED = ("server_error", "server_is_overloaded", "overloaded", "internal_error", "service_unavailable")


# --- untrusted text -------------------------------------------------------------------------------

_SK_KEY = re.compile(r"sk-[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)\bbearer\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]+")
_KEY_ECHO = re.compile(
    r"(?i)\b(x-api-key|api[-_]?key|authorization|access[-_]?token)(['\"]?\s*[:=]\s*['\"]?)(?!\[redacted\])([^\s'\",;}&]+)"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Scrub API keys from `text`: each given secret, `Bearer …`, `x-api-key: …` echoes, `sk-…` keys."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = _SK_KEY.sub("sk-[redacted]", text)
    text = _BEARER.sub("Bearer [redacted]", text)
    return _KEY_ECHO.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def clean_text(text: object, secrets: Iterable[str | None] = (), limit: int = MAX_ERROR_CHARS) -> str:
    """Make upstream text safe to store and show: redacted, one line, no control chars, bounded."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = redact(text[: limit * 8], secrets)  # redact before cutting so no key survives half-cut
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_url(url: str, secrets: Iterable[str | None] = ()) -> str:
    """The URL as it may be recorded: no user info, no fragment, query values replaced by '…'."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = "&".join(f"{pair.partition('=')[0]}=…" for pair in parts.query.split("&") if pair)
    return clean_text(urlunsplit((parts.scheme, netloc, parts.path, query, "")), secrets, limit=1000)


# --- retry policy -----------------------------------------------------------------------------------

def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed) - time.time())


def usable_retry_after(seconds: float | None) -> float | None:
    """A server hint we honour: 0 < seconds ≤ 120, else None."""
    if seconds is not None and 0 < seconds <= RETRY_AFTER_MAX_SECONDS:
        return seconds
    return None


def backoff_delay(retries_done: int) -> float:
    """min(0.5·2^n, 8)·(1 − 0.25·random()), n = retries already made."""
    base = min(BACKOFF_INITIAL_SECONDS * 2.0 ** min(retries_done, 30), BACKOFF_MAX_SECONDS)
    return base * (1 - 0.25 * random.random())


def retry_delay(retries_done: int, retry_after: float | None = None) -> float:
    """The wait before the next attempt: the server's hint when usable, else exponential backoff."""
    hint = usable_retry_after(retry_after)
    return hint if hint is not None else backoff_delay(retries_done)


# --- error mapping ----------------------------------------------------------------------------------

def classify(status: int | None, code: str = "", message: str = "") -> tuple[str, bool]:
    """(category, retryable) for an HTTP status (None for in-band errors) and an error code/message."""
    code_l, text = code.lower(), f"{code} {message}".lower()
    in_band_or_4xx = status is None or 400 <= status < 500
    if any(m in code_l for m in _MODERATION) or (in_band_or_4xx and any(m in text for m in _MODERATION)):
        return "moderation_blocked", False
    if status == 402 or any(m in text for m in _QUOTA):
        return "quota_exhausted", False
    if status in (401, 403) or (status is None and ("invalid_api_key" in code_l or "unauthorized" in code_l)):
        return "auth", False
    if status == 408:
        return "timeout", True
    if status == 409:
        return "upstream_failure", True
    if status == 429 or "rate_limit" in code_l or (status is None and "rate limit" in text):
        return "rate_limited", True
    if status is not None and status >= 500:
        return "upstream_failure", True
    if status is not None:
        return "invalid_request", False
    if any(m in code_l for m in _OVERLOADED):
        return "upstream_failure", True
    if "invalid" in code_l:
        return "invalid_request", False
    return "upstream_failure", False


def error_fields(payload: Any) -> tuple[str, str, str]:
    """(code, type, message) from an OpenAI-style `{"error": {...}}` body or a gateway's flat body."""
    if not isinstance(payload, dict):
        return "", "", ""
    err = payload.get("error")
    code = type_ = message = None
    if isinstance(err, dict):
        code, type_, message = err.get("code"), err.get("type"), err.get("message")
    elif isinstance(err, str):
        message = err
    code = code if code is not None else payload.get("code", payload.get("error_code"))
    type_ = type_ if type_ is not None else payload.get("type")
    for key in ("message", "msg", "detail", "errorMessage", "error_message"):
        if not message and isinstance(payload.get(key), (str, int, float)):
            message = payload[key]
    if isinstance(code, (int, float)) and code in (0, 200):  # gateways' "code": 0 means success
        code = None
    if type_ == "error":  # SSE error events say type "error" and carry the real code
        type_ = None
    code, type_, message = ("" if v is None or isinstance(v, (dict, list)) else str(v) for v in (code, type_, message))
    return code, type_, message


def error_from_payload(payload: Any, *, status: int | None, stage: str, secrets: Iterable[str | None] = (),
                       headers: Mapping[str, str] | None = None) -> ProviderError:
    """The ProviderError an error body (or an in-band error object) describes."""
    code, type_, message = error_fields(payload)
    category, retryable = classify(status if status is not None and status >= 400 else None,
                                   f"{code} {type_}".strip(), message)
    code = code or type_
    retry_after = parse_retry_after(headers) if headers is not None else None
    if retry_after is None and category == "rate_limited":
        retry_after = retry_after_from_text(message)
    if headers is not None and category not in NEVER_RETRY_CATEGORIES and status not in NEVER_RETRY_STATUSES:
        override = headers.get("x-should-retry", "").strip().lower()
        retryable = {"true": True, "false": False}.get(override, retryable)
    code, message = clean_text(code, secrets, 100), clean_text(message, secrets)
    prefix = f"HTTP {status}" if status is not None else "upstream error"
    text = f"{prefix}{f' ({code})' if code else ''}: {message or 'no error message'}"
    cls = HTTPStatusError if status is not None and status >= 400 else ProviderError
    return cls(text, category=category, stage=stage, http_status=status, retryable=retryable,
               retry_after=usable_retry_after(retry_after), code=code)


_TRY_AGAIN = re.compile(r"(?i)try again in\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?)\b")


def retry_after_from_text(text: str) -> float | None:
    """'Please try again in 1234ms' / '… in 1.5s' -> seconds, or None."""
    m = _TRY_AGAIN.search(text or "")
    if not m:
        return None
    value = float(m.group(1))
    return value / 1000.0 if m.group(2).lower().startswith("m") else value


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, *, stage: str,
                        secrets: Iterable[str | None] = ()) -> ProviderError:
    """Map a non-2xx answer (status, headers, first bytes of the body) to our error."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:4000].decode("utf-8", "replace")
        title = re.search(r"(?is)<title>(.*?)</title>", text)
        payload = {"message": title.group(1) if title else text}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    return error_from_payload(payload, status=status, stage=stage, secrets=secrets, headers=headers)
