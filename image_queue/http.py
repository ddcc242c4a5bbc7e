"""The one HTTP layer every real provider goes through.

It owns, in one place: the retry policy (PROTOCOLS.md, copied from openai-python), per-request
timeouts, the mapping of httpx exceptions and error bodies to our ProviderError categories, key
redaction of any upstream text, the attempts journal (`<task_dir>/attempts.jsonl`, one JSON line per
HTTP attempt) and a size-limited download. Providers never build clients: they wrap the
`httpx.Client` the worker hands them in an `HTTP` and call `HTTP.call` / `HTTP.download`.

Rate-limit seam: before every attempt of a billable call, `HTTP` calls
`hooks.before_request(provider_name)` (it may block until the provider's shared budget allows one
more image), and whenever the upstream says "rate limited" it calls
`hooks.on_rate_limited(provider_name, delay_seconds)`. Both default to no-ops; install real ones once
per process with `set_rate_limit_hooks(...)` (or pass `hooks=` to one `HTTP`).
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from image_queue.errors import BadResponseError, HTTPStatusError, ProviderError, TransportError

if TYPE_CHECKING:
    from image_queue.config import ProviderConfig

log = logging.getLogger(__name__)

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


@contextmanager
def map_httpx_errors(*, stage: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Turn httpx exceptions raised inside the block into our TransportError/BadResponseError."""
    try:
        yield
    except httpx.TimeoutException as exc:
        what = type(exc).__name__
        raise TransportError(f"{what}: {clean_text(str(exc), secrets) or 'no answer in time'}",
                             category="timeout", stage=stage, retryable=True,
                             reached_server=not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))) from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise TransportError(f"{type(exc).__name__}: {clean_text(str(exc), secrets)}", category="network",
                             stage=stage, retryable=True,
                             reached_server=not isinstance(exc, httpx.ConnectError)) from exc
    except httpx.DecodingError as exc:
        raise BadResponseError(f"undecodable response body: {clean_text(str(exc), secrets)}", stage=stage) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects, httpx.LocalProtocolError) as exc:
        raise TransportError(f"{type(exc).__name__}: {clean_text(str(exc), secrets)}", category="network",
                             stage=stage, retryable=False, reached_server=False) from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"{type(exc).__name__}: {clean_text(str(exc), secrets)}", category="network",
                             stage=stage, retryable=False) from exc


# --- rate-limit seam --------------------------------------------------------------------------------

def _no_before(provider: str) -> None:
    return None


def _no_limited(provider: str, delay: float) -> None:
    return None


@dataclass
class RateLimitHooks:
    """Callables a shared, cross-worker rate limiter plugs in; both are no-ops by default."""

    before_request: Callable[[str], None] = _no_before
    on_rate_limited: Callable[[str, float], None] = _no_limited


DEFAULT_HOOKS = RateLimitHooks()


def set_rate_limit_hooks(*, before_request: Callable[[str], None] | None = None,
                         on_rate_limited: Callable[[str, float], None] | None = None) -> None:
    """Install process-wide hooks (the worker does this once); None restores the no-op."""
    DEFAULT_HOOKS.before_request = before_request or _no_before
    DEFAULT_HOOKS.on_rate_limited = on_rate_limited or _no_limited


# --- the session ------------------------------------------------------------------------------------

@dataclass
class Reply:
    """One 2xx answer: `body` is the whole body (capped) unless the call was `stream=True`."""

    response: httpx.Response
    body: bytes | bytearray | None

    @property
    def status(self) -> int:
        return self.response.status_code

    def take_body(self) -> bytes | bytearray:
        """The raw body, handed over: the Reply keeps no reference, so the caller decides its lifetime."""
        body, self.body = self.body or b"", None
        return body

    def json(self, *, stage: str = "decode") -> Any:
        """The body as JSON, consuming it (the raw bytes are dropped at once to save memory).

        A body that is not JSON is a bad_response error, never retried: the call may have been billed.
        """
        body = self.take_body()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadResponseError(f"HTTP {self.status} answer is not valid JSON ({len(body)} bytes)",
                                   stage=stage, http_status=self.status) from exc


def timeout_for(config: "ProviderConfig") -> httpx.Timeout:
    """connect from connect_timeout_seconds; read, write and pool from request_timeout_seconds."""
    return httpx.Timeout(config.request_timeout_seconds, connect=config.connect_timeout_seconds)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class HTTP:
    """One provider's view of the shared client: headers, timeouts, retries, journal, redaction."""

    client: httpx.Client
    config: "ProviderConfig"
    api_key: str | None = None
    task_dir: Path | None = None
    hooks: RateLimitHooks = field(default_factory=lambda: DEFAULT_HOOKS)
    sleep: Callable[[float], None] = time.sleep
    billable_attempts: int = 0  # attempts of billable calls so far: GenerationResult.attempts
    billed_maybe: bool = False  # a billable attempt reached the server (money may have been spent)

    @property
    def provider_name(self) -> str:
        return self.config.name or self.config.kind

    @property
    def secrets(self) -> tuple[str, ...]:
        sensitive = re.compile(r"(?i)key|token|auth|secret|cookie")
        return tuple([self.api_key or ""] + [v for k, v in self.config.headers.items() if sensitive.search(k)])

    def url(self, path_key: str, default: str, **fields: str) -> str:
        """base_url + config.paths[path_key] (or `default`), with `{name}` fields filled in."""
        path = self.config.paths.get(path_key, default)
        for name, value in fields.items():
            path = path.replace("{" + name + "}", value)
        if path.startswith(("http://", "https://")):
            return path
        return (self.config.base_url or "").rstrip("/") + "/" + path.lstrip("/")

    def call(self, method: str, url: str, *, stage: str, headers: Mapping[str, str] | None = None,
             json: Any = None, data: Mapping[str, str] | None = None, files: list[tuple[str, Any]] | None = None,
             retry: bool = True, max_attempts: int = 1, billable: bool = False, stream: bool = False,
             handle: Callable[[Reply], Any] | None = None, max_body_bytes: int | None = None,
             plain: bool = False) -> Any:
        """Send one logical request, retrying per policy; return `handle(reply)` (default: the Reply).

        `retry=False` makes exactly one attempt whatever max_attempts says (for creates that cost money
        each time). `handle` runs inside the attempt: a retryable ProviderError it raises (e.g. an
        in-band rate-limit) is retried like an HTTP error. With `stream=True` the body is left unread
        for `handle` to iterate. `plain=True` (downloads) sends no configured headers and follows
        redirects. Raises a ProviderError after the last attempt.
        """
        limit = max(1, max_attempts) if retry else 1
        send_headers = {**({} if plain else self.config.headers), **(headers or {})}
        content = None
        if json is not None:
            content = orjson.dumps(json)
            send_headers.setdefault("content-type", "application/json")
        cap = max_body_bytes or (self.config.max_download_bytes * 4 // 3 + 1024 * 1024)
        attempt = 0
        while True:
            attempt += 1
            if billable:
                self.hooks.before_request(self.provider_name)  # may block: the shared rate limiter's turn
                self.billable_attempts += 1
            started_at, t0, seen = _now_iso(), time.perf_counter(), [None]
            try:
                request = dict(method=method, url=url, headers=send_headers, content=content, data=data, files=files)
                result = self._attempt(request, stage=stage, stream=stream, handle=handle, cap=cap, plain=plain,
                                       seen=seen)
            except ProviderError as exc:
                retrying = retry and exc.retryable and attempt < limit
                delay = retry_delay(attempt - 1, exc.retry_after)
                self.billed_maybe |= billable and self._reached(exc, seen[0])
                self._journal(attempt, method, url, stage, seen[0], time.perf_counter() - t0, started_at,
                              billable, exc, delay if retrying else None)
                if exc.category == "rate_limited":
                    self.hooks.on_rate_limited(self.provider_name, delay)
                if not retrying:
                    exc.context.update(attempts=self.billable_attempts, billed_maybe=self.billed_maybe)
                    if attempt > 1:
                        exc.message = f"{exc.message} (after {attempt} attempts)"
                        exc.args = (exc.message,)
                    raise
                log.warning("%s %s: %s; retrying in %.2fs (attempt %d of %d)", self.provider_name, stage,
                            exc.message, delay, attempt + 1, limit)
                self.sleep(delay)
                continue
            self.billed_maybe |= billable
            self._journal(attempt, method, url, stage, seen[0], time.perf_counter() - t0, started_at, billable,
                          None, None)
            return result

    def _attempt(self, request: dict[str, Any], *, stage: str, stream: bool, handle: Callable[[Reply], Any] | None,
                 cap: int, plain: bool, seen: list[int | None]) -> Any:
        """One HTTP exchange; every failure comes out as a ProviderError. seen[0] gets the status."""
        with map_httpx_errors(stage=stage, secrets=self.secrets):
            built = self.client.build_request(**request, timeout=timeout_for(self.config))
            response = self.client.send(built, stream=True, follow_redirects=plain)
            try:
                seen[0] = response.status_code
                if not response.is_success:
                    raise error_from_response(response.status_code, response.headers,
                                              _read_capped(response, ERROR_BODY_BYTES), stage=stage,
                                              secrets=self.secrets)
                # no local name for the body: handle() may drop the only reference to it
                return _run_handle(handle, Reply(response, None if stream else _read_body(response, cap, stage=stage)),
                                   stage)
            finally:
                response.close()

    def download(self, url: str, *, stage: str = "download", max_bytes: int | None = None,
                 max_attempts: int = 3) -> bytes:
        """GET a URL and return its bytes, refusing more than `max_bytes` (default max_download_bytes).

        Sends no API key and no configured headers (the URL may be on another host) and follows
        redirects. Only http(s) URLs are fetched.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise BadResponseError(f"refusing to download a {scheme or 'relative'} URL: {safe_url(url, self.secrets)}",
                                   stage=stage)
        return self.call("GET", url, stage=stage, max_attempts=max_attempts, plain=True,
                         max_body_bytes=max_bytes or self.config.max_download_bytes,
                         handle=lambda reply: bytes(reply.body or b""))

    @staticmethod
    def _reached(exc: ProviderError, status: int | None) -> bool:
        return status is not None or bool(exc.context.get("reached_server", True))

    def _journal(self, attempt: int, method: str, url: str, stage: str, status: int | None, latency: float,
                 started_at: str, billable: bool, exc: ProviderError | None, retry_in: float | None) -> None:
        if self.task_dir is None:
            return
        record = {
            "attempt": attempt,
            "method": method,
            "url": safe_url(url, self.secrets),
            "stage": stage,
            "provider": self.provider_name,
            "status": status,
            "latency_seconds": round(latency, 3),
            "error": clean_text(exc.message, self.secrets) if exc else None,
            "category": exc.category if exc else None,
            "billed_maybe": method == "POST" and (exc is None or self._reached(exc, status)),
            "billable": billable,
            "retry_in_seconds": None if retry_in is None else round(retry_in, 3),
            "started_at": started_at,
        }
        try:
            fd = os.open(Path(self.task_dir) / "attempts.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, orjson.dumps(record) + b"\n")
            finally:
                os.close(fd)
        except OSError as err:  # losing a journal line must not lose an image already paid for
            log.error("cannot append to %s/attempts.jsonl: %s", self.task_dir, err)


def _run_handle(handle: Callable[[Reply], Any] | None, reply: Reply, stage: str) -> Any:
    """Run a provider's parser; an unexpected exception on untrusted data becomes bad_response."""
    if handle is None:
        return reply
    try:
        return handle(reply)
    except (ProviderError, httpx.HTTPError):
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise BadResponseError(f"unusable HTTP {reply.status} answer: {type(exc).__name__}: {clean_text(str(exc), limit=200)}",
                               stage=stage, http_status=reply.status) from exc


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of the body, for error messages; never raises on size."""
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk[: limit - len(buf)]
        if len(buf) >= limit:
            break
    return bytes(buf)


def _read_body(response: httpx.Response, limit: int, *, stage: str, what: str = "response") -> bytearray:
    """The whole body, refusing more than `limit` bytes (checked against Content-Length and while reading)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadResponseError(f"{what} is {int(declared)} bytes, over the {limit}-byte limit", stage=stage,
                               http_status=response.status_code)
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise BadResponseError(f"{what} exceeds the {limit}-byte limit", stage=stage,
                                   http_status=response.status_code)
    return buf
