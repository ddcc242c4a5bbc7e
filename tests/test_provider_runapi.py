"""runapi (RunAPI gpt-image-2 async tasks) against the loopback fake gateway."""

from __future__ import annotations

import pytest

from image_queue.errors import HTTPStatusError, ProviderError, UsageError
from image_queue.providers.runapi import RunAPIProvider
from tests.fake_gateway import error
from tests.gateway_fixtures import KEY, generate, make_request, provider_config
from tests.gateway_fixtures import client, gateway, task_dir  # noqa: F401  (pytest fixtures, used by name)

KIND = "runapi"


def run(gateway, client, task_dir, config=None, **fields):
    return generate(KIND, gateway, client, task_dir, config=config, **fields)


def test_text_to_image_uses_the_sdk_paths_and_bearer_auth(gateway, client, task_dir):
    """POST /api/v1/gpt_image_2/text_to_image, then GET …/text_to_image/{id}; Bearer key."""
    result = run(gateway, client, task_dir, size="16:9", output_resolution="2k")
    (create,) = gateway.calls("runapi.create")
    assert create.path == "/api/v1/gpt_image_2/text_to_image"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.json == {"model": "gpt-image-2", "prompt": "a red fox in snow", "aspect_ratio": "16:9",
                           "output_resolution": "2k"}
    polls = gateway.calls("runapi.poll")
    assert [p.path for p in polls] == [f"/api/v1/gpt_image_2/text_to_image/{result.details['task_id']}"] * 2
    assert result.format == "png" and result.attempts == 1


def test_edit_sends_source_image_urls_and_polls_the_edit_path(gateway, client, task_dir):
    """With references: POST …/edit_image with source_image_urls; polls …/edit_image/{id}."""
    urls = ["https://cdn.example.test/a.png"]
    result = run(gateway, client, task_dir, images=urls)
    create = gateway.calls("runapi.create")[0]
    assert create.path == "/api/v1/gpt_image_2/edit_image" and create.json["source_image_urls"] == urls
    assert "aspect_ratio" not in create.json
    assert gateway.calls("runapi.poll")[0].path.startswith("/api/v1/gpt_image_2/edit_image/")
    assert result.mode == "edit"


def test_task_id_and_wrapped_answers_are_accepted(gateway, client, task_dir):
    """The create answer may name the id `task_id` or wrap it in `data`."""
    gateway.script("runapi.create", {"mode": "task_id"}, {"mode": "wrapped"})
    assert run(gateway, client, task_dir).format == "png"
    assert run(gateway, client, task_dir).format == "png"


def test_paths_are_configurable(gateway, client, task_dir):
    """config.paths moves both the create and the status path."""
    config = provider_config(KIND, gateway.base_url, paths={
        "text_to_image": "/proxy/api/v1/gpt_image_2/text_to_image",
        "text_to_image_status": "/proxy/api/v1/gpt_image_2/text_to_image/{id}"})
    run(gateway, client, task_dir, config=config)
    assert gateway.calls("runapi.create")[0].path.startswith("/proxy/")
    assert gateway.calls("runapi.poll")[0].path.startswith("/proxy/")


def test_insufficient_credits_and_429_on_create_fail_after_one_create(gateway, client, task_dir):
    """402 insufficient_credits → quota_exhausted; 429 → rate_limited; never a second create."""
    gateway.script("runapi.create", error(402, "insufficient_credits", "Insufficient credits"))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "quota_exhausted"
    gateway.script("runapi.create", error(429, None, "Too many requests", headers={"retry-after": "1"}))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "rate_limited" and info.value.retry_after == 1.0
    assert len(gateway.calls("runapi.create")) == 2 and gateway.calls("runapi.poll") == []


def test_a_failed_task_reports_its_error(gateway, client, task_dir):
    """status failed with an error string → a ProviderError carrying it, not retried."""
    gateway.script("runapi.create", {"mode": "fail", "reason": "generate_failed: upstream busy"})
    with pytest.raises(ProviderError, match="upstream busy") as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert not info.value.retryable and len(gateway.calls("runapi.create")) == 1


def test_check_rejects_what_runapi_cannot_make(tmp_path):
    """1:1 at 4k, far-off ratios, local files and masks fail before any create."""
    config = provider_config(KIND, "http://unused")
    cases = [
        (dict(size="1:1", output_resolution="4k"), "1:1 image at 4k"),
        (dict(size="21:9"), "not close to any aspect ratio"),
        (dict(images=[str(tmp_path / "a.png")]), "URLs only"),
        (dict(images=["https://x.test/a.png"] * 17), "1 to 16"),
    ]
    for fields, reason in cases:
        with pytest.raises(UsageError, match=reason):
            RunAPIProvider.check(make_request(None, **fields), config)
    RunAPIProvider.check(make_request(None, size="3840x2160", output_resolution="4k"), config)
    wide = provider_config(KIND, "http://unused", options={"aspect_ratios": ["auto", "1:1", "21:9"]})
    RunAPIProvider.check(make_request(None, size="21:9"), wide)
