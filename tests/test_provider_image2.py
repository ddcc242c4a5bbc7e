"""image2 (kexiangai async tasks) against the loopback fake gateway: one create, polls, download."""

from __future__ import annotations

import pytest

from image_queue.errors import HTTPStatusError, ProviderError, TransportError, UsageError
from image_queue.providers.image2 import Image2Provider
from tests.fake_gateway import error, hang
from tests.gateway_fixtures import KEY, attempts, generate, make_request, provider_config
from tests.gateway_fixtures import client, gateway, task_dir  # noqa: F401  (pytest fixtures, used by name)

KIND = "image2"


def run(gateway, client, task_dir, config=None, **fields):
    return generate(KIND, gateway, client, task_dir, config=config, **fields)


def test_text2img_create_body_and_header(gateway, client, task_dir):
    """Create sends x-api-key and the documented body; size is a ratio; no urls for text2img."""
    result = run(gateway, client, task_dir, size="1920x1080")
    (create,) = gateway.calls("image2.create")
    assert create.path == "/api/v1/user_task/asyncCreateWithCost"
    assert create.headers["x-api-key"] == KEY and "authorization" not in create.headers
    assert create.json == {"cost_type": 1, "business_url": "gpt-image2/img",
                           "user_input": {"modelName": "GPT-Image-2", "modelType": "text2img",
                                          "prompt": "a red fox in snow", "size": "16:9"}}
    polls = gateway.calls("image2.poll")
    assert len(polls) == 2 and polls[0].path == f"/api/v1/user_task/get/passAuth/{result.details['task_id']}"
    assert len(gateway.calls("files")) == 1
    assert result.format == "png" and result.attempts == 1 and result.details["size_sent"] == "16:9"
    assert result.details["cost"] == 1


def test_img2img_sends_the_urls(gateway, client, task_dir):
    """Reference URLs go in user_input.urls with modelType img2img."""
    urls = ["https://cdn.example.test/a.png", "https://cdn.example.test/b.png"]
    result = run(gateway, client, task_dir, images=urls)
    user_input = gateway.calls("image2.create")[0].json["user_input"]
    assert user_input["modelType"] == "img2img" and user_input["urls"] == urls and user_input["size"] == "auto"
    assert result.mode == "edit"


def test_a_wrapped_create_answer_is_understood(gateway, client, task_dir):
    """Deployments that wrap the answer in `data` still give the task id."""
    gateway.script("image2.create", {"mode": "wrapped"})
    assert run(gateway, client, task_dir).format == "png"


def test_429_on_create_fails_without_a_second_create(gateway, client, task_dir):
    """A rate-limited create is reported, never retried (each create costs credits)."""
    gateway.script("image2.create", error(429, "rate_limit", headers={"retry-after-ms": "10"}))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "rate_limited"
    assert len(gateway.calls("image2.create")) == 1 and gateway.calls("image2.poll") == []
    (line,) = attempts(task_dir)
    assert line["status"] == 429 and line["billed_maybe"] is True


def test_server_errors_and_timeouts_on_create_are_not_retried(gateway, client, task_dir):
    """500 or a hang on create: one create each, upstream_failure / timeout."""
    gateway.script("image2.create", error(500, "server_error"))
    with pytest.raises(HTTPStatusError):
        run(gateway, client, task_dir, max_attempts=5)
    gateway.script("image2.create", hang(5))
    config = provider_config(KIND, gateway.base_url, request_timeout_seconds=0.3)
    with pytest.raises(TransportError) as info:
        run(gateway, client, task_dir, config=config, max_attempts=5)
    assert info.value.category == "timeout"
    assert len(gateway.calls("image2.create")) == 2


def test_transient_poll_errors_are_retried(gateway, client, task_dir):
    """A 503 on a poll is retried; the task still completes with a single create."""
    gateway.script("image2.poll", error(503, headers={"retry-after-ms": "10"}))
    result = run(gateway, client, task_dir)
    assert len(gateway.calls("image2.create")) == 1 and len(gateway.calls("image2.poll")) == 3
    assert result.format == "png"


def test_a_failed_task_reports_its_reason(gateway, client, task_dir):
    """task_status failed → the failReason; a safety reason is moderation_blocked."""
    gateway.script("image2.create", {"mode": "fail", "reason": "rejected by the safety system"})
    with pytest.raises(ProviderError) as info:
        run(gateway, client, task_dir)
    assert info.value.category == "moderation_blocked" and "rejected by the safety system" in str(info.value)
    gateway.script("image2.create", {"mode": "fail", "reason": "GPU fell over"})
    with pytest.raises(ProviderError) as info:
        run(gateway, client, task_dir)
    assert info.value.category == "upstream_failure" and not info.value.retryable
    assert len(gateway.calls("image2.create")) == 2


def test_polling_gives_up_at_poll_timeout_naming_the_task(gateway, client, task_dir):
    """A task pending past poll_timeout_seconds fails as timeout, naming the task id."""
    gateway.pending_polls = 10_000
    config = provider_config(KIND, gateway.base_url, poll_timeout_seconds=0.3, poll_interval_seconds=0.05)
    with pytest.raises(TransportError) as info:
        run(gateway, client, task_dir, config=config)
    task_id = gateway.calls("image2.poll")[0].path.rsplit("/", 1)[-1]
    assert info.value.category == "timeout" and info.value.stage == "poll" and task_id in str(info.value)
    assert len(gateway.calls("image2.create")) == 1


def test_an_echoed_api_key_is_redacted(gateway, client, task_dir):
    """A 401 that echoes the x-api-key header never shows the key."""
    gateway.script("image2.create", {"echo_auth": True, "status": 401})
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir)
    assert KEY not in str(info.value) and info.value.category == "auth"


def test_check_maps_sizes_to_ratios_or_rejects_them(tmp_path):
    """WxH maps to the nearest listed ratio within 15 %; far-off sizes, local files and masks fail."""
    config = provider_config(KIND, "http://unused")
    for size in ("1024x1024", "1920x1080", "21:9", "auto", "1:3"):
        Image2Provider.check(make_request(None, size=size), config)
    local = tmp_path / "a.png"
    local.write_bytes(b"x")
    cases = [
        (dict(size="1000x100"), "not close to any aspect ratio"),
        (dict(images=[str(local)]), "URLs only"),
        (dict(images=["https://x.test/a.png"] * 9), "1 to 8"),
        (dict(images=["https://x.test/a.png"], mask="https://x.test/m.png"), "does not take a mask"),
    ]
    for fields, reason in cases:
        with pytest.raises(UsageError, match=reason):
            Image2Provider.check(make_request(None, **fields), config)
