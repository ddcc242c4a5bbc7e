"""The shared HTTP layer: retry policy, error mapping, redaction, journal, downloads, rate-limit seam."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson
import pytest

from image_queue import http as iq_http
from image_queue.config import ProviderConfig
from image_queue.errors import BadResponseError, HTTPStatusError, ProviderError, TransportError
from image_queue.http import (
    HTTP,
    RateLimitHooks,
    backoff_delay,
    classify,
    clean_text,
    error_from_response,
    map_httpx_errors,
    parse_retry_after,
    redact,
    retry_after_from_text,
    retry_delay,
    safe_url,
    set_rate_limit_hooks,
    timeout_for,
)

KEY = "sk-unit-TESTKEY0123456789"
CONFIG = ProviderConfig(name="unit", kind="openai-images", base_url="https://api.example.test/v1",
                        headers={"x-team": "blue"}, request_timeout_seconds=7, connect_timeout_seconds=3)


def session(handler: Callable[[httpx.Request], httpx.Response], tmp_path: Path | None = None,
            **kw: Any) -> tuple[HTTP, list[float]]:
    """An HTTP over a MockTransport; sleeps are recorded instead of slept."""
    slept: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    http = HTTP(client, kw.pop("config", CONFIG), api_key=KEY, task_dir=tmp_path, sleep=slept.append, **kw)
    return http, slept


def scripted(*responses: httpx.Response | Exception) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def err(status: int, code: str | None = None, message: str = "nope", *, type: str | None = None,
        headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": type, "code": code, "param": None}},
                          headers=headers)


def journal(tmp_path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]


# --- pure policy -------------------------------------------------------------------------------------

def test_retry_after_ms_header_wins_over_retry_after():
    """retry-after-ms is read first and converted to seconds."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_accepts_seconds_floats_and_http_dates():
    """retry-after may be integer or float seconds or an HTTP date; junk gives None."""
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= parse_retry_after({"retry-after": date}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_retry_delay_honours_hints_only_between_0_and_120_seconds():
    """A hint in (0, 120] is used as is; 0, negative or > 120 s falls back to backoff."""
    assert retry_delay(0, 2.0) == 2.0
    assert retry_delay(0, 120.0) == 120.0
    for hint in (0.0, -5.0, 121.0, None):
        assert 0.375 <= retry_delay(0, hint) <= 0.5


def test_backoff_doubles_from_half_a_second_with_jitter_and_caps_at_8():
    """min(0.5·2^n, 8)·(1 − 0.25·random()) for n retries already made."""
    for n, base in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        for _ in range(20):
            assert base * 0.75 <= backoff_delay(n) <= base


@pytest.mark.parametrize("status,code,message,category,retryable", [
    (400, "moderation_blocked", "Your request was rejected by the safety system", "moderation_blocked", False),
    (400, "invalid_value", "size must be …", "invalid_request", False),
    (422, None, "validation failed", "invalid_request", False),
    (404, None, "no such model", "invalid_request", False),
    (401, "invalid_api_key", "bad key", "auth", False),
    (403, None, "forbidden", "auth", False),
    (402, "insufficient_credits", "top up", "quota_exhausted", False),
    (429, "insufficient_quota", "You exceeded your current quota", "quota_exhausted", False),
    (429, "rate_limit_exceeded", "Rate limit reached", "rate_limited", True),
    (408, None, "timeout", "timeout", True),
    (409, None, "conflict", "upstream_failure", True),
    (500, "server_error", "oops", "upstream_failure", True),
    (503, None, "overloaded", "upstream_failure", True),
    (None, "image_content_policy_violation", "blocked", "moderation_blocked", False),
    (None, "rate_limit_exceeded", "slow down", "rate_limited", True),
    (None, "server_is_overloaded", "busy", "upstream_failure", True),
])
def test_classify_maps_status_and_codes_to_categories(status, code, message, category, retryable):
    """Each status/code pair lands in the documented diagnosis category with the right retryability."""
    assert classify(status, code or "", message) == (category, retryable)


def test_error_body_maps_openai_and_gateway_shapes():
    """OpenAI `{"error":{...}}` and flat gateway bodies (`code`/`msg`) both give a category and message."""
    e = error_from_response(400, {}, orjson.dumps({"error": {"message": "blocked", "type": "image_generation_user_error",
                                                             "code": "moderation_blocked"}}), stage="generate")
    assert isinstance(e, HTTPStatusError) and e.category == "moderation_blocked" and "blocked" in e.message
    flat = error_from_response(402, {}, orjson.dumps({"code": "insufficient_credits", "msg": "no credits"}), stage="create")
    assert flat.category == "quota_exhausted" and "no credits" in flat.message and flat.http_status == 402
    html = error_from_response(502, {}, b"<html><title>502 Bad Gateway</title><body>x</body></html>", stage="generate")
    assert html.category == "upstream_failure" and "502 Bad Gateway" in html.message


def test_x_should_retry_overrides_except_for_never_retry_statuses():
    """x-should-retry flips retryability, but never makes a 400/401/403/404/422 or moderation retryable."""
    assert error_from_response(500, {"x-should-retry": "false"}, b"{}", stage="g").retryable is False
    assert error_from_response(418, {"x-should-retry": "true"}, b"{}", stage="g").retryable is True
    assert error_from_response(400, {"x-should-retry": "true"}, b"{}", stage="g").retryable is False
    body = orjson.dumps({"error": {"code": "moderation_blocked"}})
    assert error_from_response(400, {"x-should-retry": "true"}, body, stage="g").retryable is False


def test_rate_limit_text_hint_is_parsed_in_ms_and_seconds():
    """'try again in 1234ms' and 'try again in 1.5s' become seconds."""
    assert retry_after_from_text("Please try again in 1234ms.") == 1.234
    assert retry_after_from_text("Please try again in 1.5s") == 1.5
    assert retry_after_from_text("no hint here") is None


# --- untrusted text ----------------------------------------------------------------------------------

def test_redact_scrubs_keys_bearer_tokens_header_echoes_and_sk_keys():
    """The literal key, `Bearer …`, `x-api-key: …`, `"api_key": "…"` and any sk-… are scrubbed."""
    text = (f"bad key {KEY}; Authorization: Bearer abc.def-123; x-api-key: i2key999; "
            '{"api_key": "zzz-secret"}; other sk-proj-AAAAAAAAAAAAAAAA; short plain-key-7')
    out = redact(text, [KEY, "plain-key-7"])
    for secret in (KEY, "abc.def-123", "i2key999", "zzz-secret", "sk-proj-AAAAAAAAAAAAAAAA", "plain-key-7"):
        assert secret not in out
    assert "[redacted]" in out


def test_clean_text_strips_control_characters_and_truncates():
    """Newlines, ANSI escapes, NULs and bidi overrides go; long text is cut to the limit with an ellipsis."""
    out = clean_text("line1\nline2\x1b[31m\x00red\u202etxt", limit=500)
    assert "\n" not in out and "\x1b" not in out and "\x00" not in out and "\u202e" not in out
    long = clean_text("x" * 10_000)
    assert len(long) == iq_http.MAX_ERROR_CHARS and long.endswith("…")


def test_safe_url_drops_user_info_fragment_and_query_values():
    """Recorded URLs keep scheme, host, path and query names only."""
    out = safe_url(f"https://user:pw@cdn.test/img.png?sig=abc123&key={KEY}#frag")
    assert out == "https://cdn.test/img.png?sig=…&key=…"


# --- exception mapping -------------------------------------------------------------------------------

def test_httpx_exceptions_map_to_our_errors_with_the_cause_kept():
    """ConnectError → network (not reached), ReadTimeout → timeout (reached); `raise … from exc`."""
    with pytest.raises(TransportError) as info:
        with map_httpx_errors(stage="generate"):
            raise httpx.ConnectError("refused")
    assert info.value.category == "network" and info.value.retryable
    assert info.value.context["reached_server"] is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    with pytest.raises(TransportError) as info:
        with map_httpx_errors(stage="generate"):
            raise httpx.ReadTimeout("slow")
    assert info.value.category == "timeout" and info.value.context["reached_server"] is True


def test_timeouts_come_from_the_provider_config():
    """connect from connect_timeout_seconds, read/write/pool from request_timeout_seconds."""
    t = timeout_for(CONFIG)
    assert (t.connect, t.read, t.write, t.pool) == (3, 7, 7, 7)


# --- the session -------------------------------------------------------------------------------------

def test_call_retries_retryable_errors_up_to_max_attempts_and_journals_each(tmp_path):
    """500, 500, 200 with max_attempts 3 → 3 attempts, 2 backoff sleeps, 3 journal lines."""
    handler, seen = scripted(err(500, "server_error"), err(500, "server_error"), httpx.Response(200, json={"ok": 1}))
    http, slept = session(handler, tmp_path)
    reply = http.call("POST", "https://api.example.test/v1/x", stage="generate", json={"a": 1},
                      max_attempts=3, billable=True)
    assert reply.json() == {"ok": 1}
    assert len(seen) == 3 and http.billable_attempts == 3 and len(slept) == 2
    assert 0.375 <= slept[0] <= 0.5 and 0.75 <= slept[1] <= 1.0
    lines = journal(tmp_path)
    assert [line["status"] for line in lines] == [500, 500, 200]
    assert [line["attempt"] for line in lines] == [1, 2, 3]
    assert lines[0]["category"] == "upstream_failure" and lines[0]["billed_maybe"] is True
    assert set(lines[0]) >= {"attempt", "method", "url", "status", "latency_seconds", "error", "category",
                             "billed_maybe", "started_at"}


def test_call_gives_up_after_max_attempts_and_says_how_many(tmp_path):
    """Three 503s with max_attempts 2: exactly 2 requests, the error names the attempt count."""
    handler, seen = scripted(err(503), err(503), err(503))
    http, _ = session(handler, tmp_path)
    with pytest.raises(HTTPStatusError) as info:
        http.call("POST", "https://api.example.test/v1/x", stage="generate", max_attempts=2, billable=True)
    assert len(seen) == 2
    assert info.value.context["attempts"] == 2 and "after 2 attempts" in info.value.message


def test_retry_false_makes_exactly_one_attempt_even_on_429(tmp_path):
    """retry=False (async creates) never retries, whatever max_attempts says."""
    handler, seen = scripted(err(429, "rate_limit_exceeded", headers={"retry-after-ms": "10"}),
                             httpx.Response(200, json={}))
    http, slept = session(handler, tmp_path)
    with pytest.raises(HTTPStatusError) as info:
        http.call("POST", "https://api.example.test/x", stage="create", retry=False, max_attempts=5, billable=True)
    assert len(seen) == 1 and slept == [] and info.value.category == "rate_limited"
    assert info.value.retry_after == 0.01


def test_never_retry_categories_are_not_retried(tmp_path):
    """moderation_blocked, insufficient_quota and 401 stop at the first attempt."""
    for response in (err(400, "moderation_blocked"), err(429, "insufficient_quota", type="insufficient_quota"), err(401)):
        handler, seen = scripted(response, httpx.Response(200, json={}))
        http, _ = session(handler, tmp_path)
        with pytest.raises(HTTPStatusError):
            http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=5)
        assert len(seen) == 1


def test_retry_after_hint_is_slept_before_the_next_attempt(tmp_path):
    """A 429 with retry-after: 2 sleeps exactly 2 s before retrying."""
    handler, seen = scripted(err(429, "rate_limit_exceeded", headers={"retry-after": "2"}), httpx.Response(200, json={}))
    http, slept = session(handler, tmp_path)
    http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=2)
    assert slept == [2.0] and len(seen) == 2


def test_connection_errors_are_retried_and_journaled_as_not_billed(tmp_path):
    """A refused connection never reached the server: billed_maybe false; then success."""
    handler, seen = scripted(httpx.ConnectError("refused"), httpx.Response(200, json={}))
    http, _ = session(handler, tmp_path)
    http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=2, billable=True)
    lines = journal(tmp_path)
    assert [line["category"] for line in lines] == ["network", None]
    assert [line["billed_maybe"] for line in lines] == [False, True]


def test_requests_carry_config_headers_and_per_request_timeouts():
    """Extra headers from config.headers are sent, with the timeouts from the config."""
    handler, seen = scripted(httpx.Response(200, json={}))
    http, _ = session(handler)
    http.call("POST", "https://api.example.test/x", stage="generate", headers={"authorization": f"Bearer {KEY}"},
              json={"a": 1})
    assert seen[0].headers["x-team"] == "blue" and seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].extensions["timeout"] == {"connect": 3, "read": 7, "write": 7, "pool": 7}
    assert orjson.loads(seen[0].content) == {"a": 1}


def test_an_error_body_echoing_the_key_never_reaches_the_error_or_journal(tmp_path):
    """The key, echoed back by a careless gateway, is redacted everywhere we store text."""
    handler, _ = scripted(err(401, "invalid_api_key", f"Incorrect API key provided: Bearer {KEY}"))
    http, _ = session(handler, tmp_path)
    with pytest.raises(HTTPStatusError) as info:
        http.call("POST", "https://api.example.test/x", stage="generate")
    assert KEY not in str(info.value) and KEY not in (tmp_path / "attempts.jsonl").read_text()
    assert info.value.category == "auth"


def test_handle_errors_are_retried_when_retryable():
    """A retryable ProviderError raised while reading a 200 (in-band rate limit) is retried."""
    handler, seen = scripted(httpx.Response(200, json={}))
    http, slept = session(handler)
    calls = []

    def handle(reply: iq_http.Reply) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ProviderError("slow down", category="rate_limited", retryable=True, retry_after=0.05)
        return "ok"

    assert http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=2, handle=handle) == "ok"
    assert len(seen) == 2 and slept == [0.05]


def test_unparseable_json_is_bad_response_and_not_retried():
    """A 200 whose body is not JSON is bad_response: one attempt only (it may have been billed)."""
    handler, seen = scripted(httpx.Response(200, content=b"{oops"))
    http, _ = session(handler)
    with pytest.raises(BadResponseError):
        http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=3,
                  handle=lambda reply: reply.json())
    assert len(seen) == 1


def test_rate_limit_hooks_are_called_per_billable_attempt_and_on_429():
    """before_request runs before each billable attempt; on_rate_limited gets the wait it caused."""
    events: list[tuple[Any, ...]] = []
    hooks = RateLimitHooks(before_request=lambda name: events.append(("before", name)),
                           on_rate_limited=lambda name, delay: events.append(("limited", name, delay)))
    handler, _ = scripted(err(429, "rate_limit_exceeded", headers={"retry-after": "3"}), httpx.Response(200, json={}))
    http, _ = session(handler, hooks=hooks)
    http.call("POST", "https://api.example.test/x", stage="generate", max_attempts=2, billable=True)
    assert events == [("before", "unit"), ("limited", "unit", 3.0), ("before", "unit")]


def test_set_rate_limit_hooks_installs_process_wide_hooks():
    """set_rate_limit_hooks reaches sessions built afterwards; None restores the no-ops."""
    seen: list[str] = []
    set_rate_limit_hooks(before_request=seen.append)
    try:
        handler, _ = scripted(httpx.Response(200, json={}))
        http, _ = session(handler)
        http.call("POST", "https://api.example.test/x", stage="generate", billable=True)
        http.call("GET", "https://api.example.test/poll", stage="poll")  # not billable: no hook
        assert seen == ["unit"]
    finally:
        set_rate_limit_hooks()
    assert iq_http.DEFAULT_HOOKS.before_request("x") is None


# --- downloads ---------------------------------------------------------------------------------------

def test_download_sends_no_key_or_config_headers_and_follows_redirects():
    """Result URLs may live on another host: no auth, no configured headers; redirects followed."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/a":
            return httpx.Response(302, headers={"location": "https://cdn.test/b"})
        return httpx.Response(200, content=b"\x89PNG\r\n\x1a\nrest")

    http, _ = session(handler)
    assert http.download("https://cdn.test/a").startswith(b"\x89PNG")
    assert [r.url.path for r in seen] == ["/a", "/b"]
    for request in seen:
        assert "authorization" not in request.headers and "x-team" not in request.headers
        assert KEY not in str(request.headers)


def test_download_enforces_the_size_limit_by_header_and_while_streaming():
    """Content-Length over the cap fails at once; an unannounced oversized stream fails while reading."""
    http, _ = session(lambda request: httpx.Response(200, content=b"x" * 2000))
    with pytest.raises(BadResponseError, match="over the 1000-byte limit"):
        http.download("https://cdn.test/big", max_bytes=1000)

    def chunks():
        for _ in range(10):
            yield b"y" * 500

    http, _ = session(lambda request: httpx.Response(200, content=chunks()))
    with pytest.raises(BadResponseError, match="exceeds the 1000-byte limit"):
        http.download("https://cdn.test/stream", max_bytes=1000)


def test_download_refuses_non_http_urls():
    """file://, ftp:// and relative URLs are never fetched."""
    http, _ = session(lambda request: httpx.Response(200))
    for url in ("file:///etc/passwd", "ftp://x/y", "/relative"):
        with pytest.raises(BadResponseError, match="refusing"):
            http.download(url)


def test_url_builds_from_base_and_overridable_paths():
    """config.paths overrides a default path; {id} fields are filled in."""
    config = CONFIG.model_copy(update={"paths": {"status": "/tasks/{id}/state"}})
    http, _ = session(lambda request: httpx.Response(200), config=config)
    assert http.url("generations", "/images/generations") == "https://api.example.test/v1/images/generations"
    assert http.url("status", "/default/{id}", id="T1") == "https://api.example.test/v1/tasks/T1/state"
