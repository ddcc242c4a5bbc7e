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

The pure policy (redaction, retry delays, error classification) lives in http_policy.py and is
re-exported here.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import httpx
import orjson

from image_queue.errors import BadResponseError, ProviderError, TransportError

if TYPE_CHECKING:
    from image_queue.config import ProviderConfig

log = logging.getLogger(__name__)

from image_queue.http_policy import (  # noqa: F401  (re-exported: providers import them from here)
    ERROR_BODY_BYTES, MAX_ERROR_CHARS, NEVER_RETRY_CATEGORIES, NEVER_RETRY_STATUSES, RETRY_AFTER_MAX_SECONDS,
    backoff_delay, classify, clean_text, error_fields, error_from_payload, error_from_response,
    parse_retry_after, redact, retry_after_from_text, retry_delay, safe_url, usable_retry_after,
)

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
