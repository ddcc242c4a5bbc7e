"""openai-responses against the loopback fake gateway: JSON and SSE, degradations, errors, checks."""

from __future__ import annotations

import base64

import pytest

from image_queue.errors import BadResponseError, HTTPStatusError, ProviderError, UsageError
from image_queue.providers.openai_responses import OpenAIResponsesProvider
from tests.fake_gateway import error, invalid_json
from tests.gateway_fixtures import KEY, attempts, generate, make_request, png_file, provider_config
from tests.gateway_fixtures import client, gateway, task_dir  # noqa: F401  (pytest fixtures, used by name)

KIND = "openai-responses"


def config_for(gateway, **overrides):
    overrides.setdefault("model", "gpt-5.4")
    overrides.setdefault("options", {"text_retry_delay_seconds": 0.01})
    return provider_config(KIND, gateway.openai_base, **overrides)


def run(gateway, client, task_dir, config=None, **fields):
    return generate(KIND, gateway, client, task_dir, config=config or config_for(gateway), **fields)


def test_request_body_uses_the_image_generation_tool(gateway, client, task_dir):
    """POST /v1/responses: model, input, one image_generation tool with the options, store false."""
    result = run(gateway, client, task_dir, size="1024x1536", quality="high", background="opaque")
    (call,) = gateway.calls("responses")
    assert call.path == "/v1/responses" and call.headers["authorization"] == f"Bearer {KEY}"
    assert call.json == {
        "model": "gpt-5.4", "input": "a red fox in snow",
        "tools": [{"type": "image_generation", "output_format": "png", "size": "1024x1536", "quality": "high",
                   "background": "opaque"}],
        "tool_choice": "auto", "stream": False, "store": False,
    }
    assert result.format == "png" and result.attempts == 1 and result.model == "gpt-5.4"
    assert result.usage == {"input_tokens": 12, "output_tokens": 34, "total_tokens": 46}
    assert result.revised_prompt == "revised: a red fox in snow"


def test_image_model_option_and_ratio_sizes_reach_the_tool(gateway, client, task_dir):
    """options.image_model becomes the tool's model; a 16:9 ratio becomes 1536x864."""
    config = config_for(gateway, options={"image_model": "gpt-image-2"})
    run(gateway, client, task_dir, config=config, size="16:9")
    tool = gateway.calls("responses")[0].json["tools"][0]
    assert tool["model"] == "gpt-image-2" and tool["size"] == "1536x864"


def test_reference_images_go_inline_or_by_url(gateway, client, task_dir, tmp_path):
    """A local file becomes a data URL input_image; a URL is passed as is; a mask goes in the tool."""
    ref, mask = png_file(tmp_path, "ref.png"), png_file(tmp_path, "mask.png")
    run(gateway, client, task_dir, images=[str(ref), "https://cdn.example.test/a.png"], mask=str(mask))
    body = gateway.calls("responses")[0].json
    (message,) = body["input"]
    assert message["role"] == "user"
    text, local, remote = message["content"]
    assert text == {"type": "input_text", "text": "a red fox in snow"}
    assert local["type"] == "input_image"
    assert local["image_url"] == "data:image/png;base64," + base64.b64encode(ref.read_bytes()).decode()
    assert remote == {"type": "input_image", "image_url": "https://cdn.example.test/a.png"}
    assert body["tools"][0]["input_image_mask"]["image_url"].startswith("data:image/png;base64,")


def test_streaming_takes_the_final_image_and_counts_partials(gateway, client, task_dir):
    """SSE: partial images are counted, not kept; the image comes from output_item.done."""
    config = config_for(gateway, stream=True, options={"partial_images": 2})
    result = run(gateway, client, task_dir, config=config)
    call = gateway.calls("responses")[0]
    assert call.json["stream"] is True and call.json["tools"][0]["partial_images"] == 2
    assert call.headers["accept"] == "text/event-stream"
    assert result.details["partial_images"] == 2 and result.details["stream"] is True
    assert result.format == "png" and result.usage["total_tokens"] == 46
    assert result.revised_prompt == "revised: a red fox in snow"


def test_streaming_jpeg_is_sniffed(gateway, client, task_dir):
    """The streamed image's format comes from its bytes."""
    result = run(gateway, client, task_dir, config=config_for(gateway, stream=True), output_format="jpeg")
    assert result.format == "jpeg"


def test_text_only_tools_empty_answer_is_retried(gateway, client, task_dir):
    """A gateway answer with text and `tools: []` is retried; the second POST gives the image."""
    gateway.script("responses", {"mode": "text_only"})
    result = run(gateway, client, task_dir, max_attempts=3)
    assert len(gateway.calls("responses")) == 2 and result.attempts == 2
    first = attempts(task_dir)[0]
    assert first["category"] == "bad_response" and "dropped the image tool" in first["error"]


def test_text_only_answers_stop_at_max_attempts(gateway, client, task_dir):
    """The degradation retry is bounded: max_attempts 2 → 2 POSTs, then bad_response."""
    gateway.script("responses", *[{"mode": "text_only"}] * 3)
    with pytest.raises(BadResponseError, match="dropped the image tool"):
        run(gateway, client, task_dir, max_attempts=2)
    assert len(gateway.calls("responses")) == 2


def test_rate_limit_text_is_retried_after_its_hint(gateway, client, task_dir):
    """'Please try again in 30ms' in the answer text → rate_limited, retried after ≥ 30 ms."""
    gateway.script("responses", {"mode": "rate_limit_text"})
    result = run(gateway, client, task_dir)
    first, second = gateway.calls("responses")
    assert second.t - first.t >= 0.03 and result.attempts == 2
    assert attempts(task_dir)[0]["category"] == "rate_limited"


def test_a_model_that_answers_text_is_a_bad_response_without_retry(gateway, client, task_dir):
    """The tool was offered but the model wrote text: bad_response, one POST (retrying costs again)."""
    gateway.script("responses", {"mode": "no_tool_text"})
    with pytest.raises(BadResponseError, match="poem"):
        run(gateway, client, task_dir, max_attempts=3)
    assert len(gateway.calls("responses")) == 1


def test_stream_error_events_map_to_categories(gateway, client, task_dir):
    """An SSE `error` with image_content_policy_violation is moderation_blocked, never retried."""
    gateway.script("responses", {"mode": "stream_error", "code": "image_content_policy_violation",
                                 "message": "blocked by policy"})
    with pytest.raises(ProviderError) as info:
        run(gateway, client, task_dir, config=config_for(gateway, stream=True), max_attempts=3)
    assert info.value.category == "moderation_blocked" and len(gateway.calls("responses")) == 1


def test_stream_rate_limit_events_are_retried(gateway, client, task_dir):
    """An SSE `error` rate_limit_exceeded with 'try again in 20ms' is retried, then succeeds."""
    gateway.script("responses", {"mode": "stream_error", "code": "rate_limit_exceeded",
                                 "message": "Rate limit reached. Please try again in 20ms."})
    result = run(gateway, client, task_dir, config=config_for(gateway, stream=True), max_attempts=2)
    assert result.attempts == 2 and len(gateway.calls("responses")) == 2


def test_http_errors_use_the_shared_policy(gateway, client, task_dir):
    """429 with retry-after-ms is retried; 400 moderation is not; invalid JSON is bad_response once."""
    gateway.script("responses", error(429, "rate_limit_exceeded", headers={"retry-after-ms": "20"}))
    assert run(gateway, client, task_dir).attempts == 2
    gateway.script("responses", error(400, "moderation_blocked"))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "moderation_blocked"
    gateway.script("responses", invalid_json())
    with pytest.raises(BadResponseError):
        run(gateway, client, task_dir, max_attempts=5)
    assert len(gateway.calls("responses")) == 4


def test_an_echoed_key_is_redacted(gateway, client, task_dir):
    """An error that quotes the Authorization header never shows the key."""
    gateway.script("responses", {"echo_auth": True, "status": 401})
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir)
    assert KEY not in str(info.value) and info.value.category == "auth"


def test_check_applies_gpt_image_size_rules_and_prompt_limits(tmp_path):
    """Sizes follow gpt-image-2 rules (or gpt-image-1's via options.image_model); prompts ≤ 32000."""
    config = provider_config(KIND, "http://unused")
    with pytest.raises(UsageError, match="multiples of 16"):
        OpenAIResponsesProvider.check(make_request(None, size="1000x1000"), config)
    with pytest.raises(UsageError, match="at most 32000"):
        OpenAIResponsesProvider.check(make_request(None, prompt="y" * 32001), config)
    old = provider_config(KIND, "http://unused", options={"image_model": "gpt-image-1"})
    with pytest.raises(UsageError, match="1024x1024"):
        OpenAIResponsesProvider.check(make_request(None, size="3840x2160"), old)
    OpenAIResponsesProvider.check(make_request(None, size="3840x2160"), config)
