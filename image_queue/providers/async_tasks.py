"""Shared create → poll → download flow of the async task gateways (image2, runapi).

The create costs money, so it is made exactly once (`retry=False`): a 429 or a timeout on it fails the
task. Polls are free: each poll retries transient errors, and a poll that still fails is tried again
at the next interval until `poll_timeout_seconds`. Every poll is one line in attempts.jsonl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from image_queue.errors import BadResponseError, ProviderError, TransportError
from image_queue.http import HTTP, Reply, clean_text, classify, error_from_payload
from image_queue.providers.media import unwrap

POLL_ATTEMPTS = 3


@dataclass
class TaskState:
    """One poll's reading: `phase` is pending, done or failed."""

    phase: str
    urls: list[str]
    reason: str = ""
    raw_status: str = ""


def create_task(http: HTTP, url: str, *, headers: dict[str, str], body: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """POST the create once; (task id, http status, the answer's object). Never retried."""

    def parse(reply: Reply) -> tuple[str, int, dict[str, Any]]:
        payload = unwrap(reply.json(), "id", "task_id")
        if not isinstance(payload, dict):
            raise BadResponseError(f"create answered HTTP {reply.status} with no JSON object; it may have been billed",
                                   stage="create", http_status=reply.status)
        task_id = payload.get("id", payload.get("task_id"))
        if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or str(task_id) == "":
            if payload.get("error") or payload.get("code") not in (None, 0, 200, "0", "200", "success"):
                raise error_from_payload(payload, status=reply.status, stage="create", secrets=http.secrets)
            raise BadResponseError(f"create answered HTTP {reply.status} without a task id; it may have been billed",
                                   stage="create", http_status=reply.status)
        return clean_text(task_id, limit=200), reply.status, payload

    return http.call("POST", url, stage="create", headers=headers, json=body, retry=False, billable=True,
                     handle=parse)


def poll_task(http: HTTP, url: str, *, headers: dict[str, str], task_id: str,
              read: Callable[[dict[str, Any]], TaskState]) -> TaskState:
    """Poll `url` every poll_interval_seconds until the task is done (returned) or failed (raised)."""
    interval, timeout = http.config.poll_interval_seconds, http.config.poll_timeout_seconds
    deadline = time.monotonic() + timeout
    last = "pending"
    while True:
        http.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        try:
            payload = http.call("GET", url, stage="poll", headers=headers, max_attempts=POLL_ATTEMPTS,
                                handle=lambda reply: unwrap(reply.json(stage="poll"), "status", "task_status"))
        except ProviderError as exc:
            if not (exc.retryable or exc.category == "bad_response") or time.monotonic() >= deadline:
                exc.message = f"task {task_id}: {exc.message}"
                exc.args = (exc.message,)
                raise
            payload = None
        if isinstance(payload, dict):
            state = read(payload)
            last = state.raw_status or last
            if state.phase == "done":
                if not state.urls:
                    raise BadResponseError(f"task {task_id} finished without an image URL", stage="poll")
                return state
            if state.phase == "failed":
                category, _ = classify(None, "", state.reason)
                if category == "upstream_failure" and "invalid" in state.reason.lower():
                    category = "invalid_request"
                raise ProviderError(f"task {task_id} failed: {clean_text(state.reason, http.secrets) or last}",
                                    category=category, stage="generate", retryable=False, task_id=task_id)
        if time.monotonic() >= deadline:
            raise TransportError(
                f"task {task_id} still {clean_text(last, limit=40)} after {timeout:g}s of polling; "
                "it may still finish (and be billed) upstream", category="timeout", stage="poll", retryable=False,
                task_id=task_id)


def image_urls(value: Any) -> list[str]:
    """http(s) URLs from a string or a list of strings / {url} objects."""
    items = value if isinstance(value, list) else [value]
    urls = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("url")
        if isinstance(item, str) and item.lower().startswith(("http://", "https://")):
            urls.append(item)
    return urls
