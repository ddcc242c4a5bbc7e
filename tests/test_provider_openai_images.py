"""openai-images against the loopback fake gateway: wire format, retries, errors, checks."""

from __future__ import annotations

import base64
import os
import tracemalloc

import orjson
import pytest

from image_queue.errors import BadResponseError, HTTPStatusError, LocalInputError, TransportError, UsageError
from image_queue.providers.mock import placeholder_png
from image_queue.providers.openai_images import OpenAIImagesProvider
from tests.fake_gateway import error, hang, invalid_json
from tests.gateway_fixtures import KEY, attempts, generate, make_request, png_file, provider_config
from tests.gateway_fixtures import client, gateway, task_dir  # noqa: F401  (pytest fixtures, used by name)

KIND = "openai-images"


def run(gateway, client, task_dir, **fields):
    return generate(KIND, gateway, client, task_dir, **fields)


# --- wire format ---------------------------------------------------------------------------------------

def test_generation_posts_the_documented_json_body(gateway, client, task_dir):
    """POST /v1/images/generations with model, prompt, n=1, size and the set options; no response_format."""
    result = run(gateway, client, task_dir, size="1536x1024", quality="high", background="opaque",
                 output_format="webp", output_compression=80, moderation="low")
    (call,) = gateway.calls("generations")
    assert call.path == "/v1/images/generations"
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.json == {"model": "gpt-image-2", "prompt": "a red fox in snow", "n": 1, "size": "1536x1024",
                         "quality": "high", "background": "opaque", "output_format": "webp",
                         "output_compression": 80, "moderation": "low"}
    assert result.format == "png" and result.mode == "generation" and result.attempts == 1
    assert result.revised_prompt == "revised: a red fox in snow"
    assert result.usage == {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110}
    assert result.http_status == 200 and result.model == "gpt-image-2"


def test_unset_options_are_not_sent_and_response_format_only_when_configured(gateway, client, task_dir):
    """Only set fields go out; response_format appears only when the provider config sets it."""
    run(gateway, client, task_dir)
    assert gateway.calls("generations")[0].json == {"model": "gpt-image-2", "prompt": "a red fox in snow", "n": 1}
    config = provider_config(KIND, gateway.openai_base, response_format="b64_json", headers={"x-org": "acme"},
                             options={"extra_fields": {"user": "batch-7"}})
    generate(KIND, gateway, client, task_dir, config=config)
    call = gateway.calls("generations")[1]
    assert call.json["response_format"] == "b64_json" and call.json["user"] == "batch-7"
    assert call.headers["x-org"] == "acme"


def test_paths_are_overridable(gateway, client, task_dir):
    """config.paths.generations replaces the default path."""
    config = provider_config(KIND, gateway.base_url, paths={"generations": "/openai/v1/images/generations"})
    generate(KIND, gateway, client, task_dir, config=config)
    assert gateway.calls("generations")[0].path == "/openai/v1/images/generations"


def test_one_reference_image_is_uploaded_as_field_image(gateway, client, task_dir, tmp_path):
    """An edit with one local file is multipart with `image`, text fields, n=1 and no moderation field."""
    ref = png_file(tmp_path, "cat.png")
    result = run(gateway, client, task_dir, images=[str(ref)], moderation="low", size="1024x1024")
    (call,) = gateway.calls("edits")
    assert call.path == "/v1/images/edits" and call.headers["content-type"].startswith("multipart/form-data")
    assert list(call.files) == ["image"]
    filename, ctype, data = call.files["image"][0]
    assert (filename, ctype, data) == ("cat.png", "image/png", ref.read_bytes())
    assert call.form == {"model": ["gpt-image-2"], "prompt": ["a red fox in snow"], "n": ["1"], "size": ["1024x1024"]}
    assert "moderation" not in call.form
    assert result.mode == "edit"


def test_several_references_use_repeated_image_brackets_and_a_mask(gateway, client, task_dir, tmp_path):
    """Two images go as repeated `image[]` parts in order; the mask as `mask`."""
    a, b, mask = png_file(tmp_path, "a.png"), png_file(tmp_path, "b.png"), png_file(tmp_path, "mask.png")
    run(gateway, client, task_dir, images=[str(a), str(b)], mask=str(mask))
    (call,) = gateway.calls("edits")
    assert [f[0] for f in call.files["image[]"]] == ["a.png", "b.png"]
    assert call.files["mask"][0][2] == mask.read_bytes()
    assert "image" not in call.files


def test_url_references_are_downloaded_then_uploaded(gateway, client, task_dir):
    """A URL reference is fetched (size-limited, no key sent) and uploaded as a file part."""
    image = placeholder_png(20, 20, "remote")
    url = gateway.add_file("remote.png", image)
    run(gateway, client, task_dir, images=[url])
    (download,) = gateway.calls("files")
    assert "authorization" not in download.headers
    assert gateway.calls("edits")[0].files["image"][0][2] == image


def test_url_reference_too_big_is_a_local_input_error(gateway, client, task_dir):
    """A reference URL over max_download_bytes fails as local_input before anything is billed."""
    url = gateway.add_file("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 5000)
    config = provider_config(KIND, gateway.openai_base, max_download_bytes=1000)
    with pytest.raises(LocalInputError, match="could not be downloaded"):
        generate(KIND, gateway, client, task_dir, config=config, images=[url])
    assert gateway.calls("edits") == []


def test_url_result_is_downloaded(gateway, client, task_dir):
    """An answer with `url` instead of `b64_json` is downloaded."""
    gateway.script("generations", {"mode": "url"})
    result = run(gateway, client, task_dir)
    assert len(gateway.calls("files")) == 1 and result.format == "png"
    assert result.details["result_via"] == "url"


def test_format_is_sniffed_from_the_bytes(gateway, client, task_dir):
    """A JPEG answer is reported as jpeg whatever was asked."""
    gateway.script("generations", {"mode": "jpeg"})
    assert run(gateway, client, task_dir, output_format="png").format == "jpeg"


def test_non_image_bytes_are_a_bad_response(gateway, client, task_dir):
    """b64_json that decodes to text is bad_response, never saved as an image."""
    body = {"data": [{"b64_json": base64.b64encode(b"<html>not an image</html>").decode()}]}
    gateway.script("generations", {"status": 200, "json": body})
    with pytest.raises(BadResponseError, match="not a PNG, JPEG or WebP"):
        run(gateway, client, task_dir)


# --- retries and errors -----------------------------------------------------------------------------------

def test_429_with_retry_after_ms_is_retried_after_the_hint(gateway, client, task_dir):
    """429 rate_limit_exceeded + retry-after-ms: 150 → waits ≥ 0.15 s, then succeeds: 2 attempts."""
    gateway.script("generations", error(429, "rate_limit_exceeded", "Rate limit reached",
                                        headers={"retry-after-ms": "150"}))
    result = run(gateway, client, task_dir)
    first, second = gateway.calls("generations")
    assert second.t - first.t >= 0.15
    assert result.attempts == 2
    lines = attempts(task_dir)
    assert [(line["status"], line["category"]) for line in lines] == [(429, "rate_limited"), (200, None)]
    assert lines[0]["retry_in_seconds"] == 0.15


def test_500_twice_then_success_makes_three_attempts(gateway, client, task_dir):
    """Two 500s then a 200 with max_attempts 3: exactly 3 POSTs, result.attempts == 3."""
    gateway.script("generations", error(500, "server_error"), error(500, "server_error"))
    result = run(gateway, client, task_dir, max_attempts=3)
    assert len(gateway.calls("generations")) == 3 and result.attempts == 3


def test_max_attempts_bounds_retries(gateway, client, task_dir):
    """500s forever with max_attempts 2: exactly 2 POSTs, then upstream_failure."""
    gateway.script("generations", *[error(500, "server_error", headers={"retry-after-ms": "10"})] * 5)
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=2)
    assert len(gateway.calls("generations")) == 2
    assert info.value.category == "upstream_failure" and info.value.context["attempts"] == 2


def test_a_hang_past_the_request_timeout_is_a_timeout(gateway, client, task_dir):
    """No answer within request_timeout_seconds → timeout, journaled as maybe billed."""
    gateway.script("generations", hang(5))
    config = provider_config(KIND, gateway.openai_base, request_timeout_seconds=0.3)
    with pytest.raises(TransportError) as info:
        generate(KIND, gateway, client, task_dir, config=config, max_attempts=1)
    assert info.value.category == "timeout"
    (line,) = attempts(task_dir)
    assert line["category"] == "timeout" and line["billed_maybe"] is True and line["status"] is None


def test_moderation_block_is_never_retried(gateway, client, task_dir):
    """400 moderation_blocked → moderation_blocked after one POST, even with max_attempts 5."""
    gateway.script("generations", error(400, "moderation_blocked", "Your request was rejected by the safety system",
                                        type="image_generation_user_error"))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "moderation_blocked" and not info.value.retryable
    assert len(gateway.calls("generations")) == 1


def test_insufficient_quota_429_is_never_retried(gateway, client, task_dir):
    """429 insufficient_quota is quota_exhausted, not a rate limit: one POST."""
    gateway.script("generations", error(429, "insufficient_quota", "You exceeded your current quota",
                                        headers={"retry-after-ms": "10"}))
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir, max_attempts=5)
    assert info.value.category == "quota_exhausted"
    assert len(gateway.calls("generations")) == 1


def test_invalid_json_is_a_bad_response_after_one_attempt(gateway, client, task_dir):
    """A 200 with a truncated JSON body is bad_response and not retried (it may be billed)."""
    gateway.script("generations", invalid_json())
    with pytest.raises(BadResponseError):
        run(gateway, client, task_dir, max_attempts=3)
    assert len(gateway.calls("generations")) == 1


def test_an_error_echoing_the_authorization_header_is_redacted(gateway, client, task_dir):
    """A 401 body that quotes `Bearer <key>` never puts the key in the error or attempts.jsonl."""
    gateway.script("generations", {"echo_auth": True, "status": 401})
    with pytest.raises(HTTPStatusError) as info:
        run(gateway, client, task_dir)
    assert info.value.category == "auth"
    assert KEY not in str(info.value) and KEY[8:] not in str(info.value) and "[redacted]" in str(info.value)
    assert KEY not in (task_dir / "attempts.jsonl").read_text()


def test_200_with_an_error_object_is_mapped(gateway, client, task_dir):
    """Gateways that answer 200 {"error": ...} get the error's category, not a crash."""
    gateway.script("generations", {"status": 200, "json": {"error": {"code": "insufficient_quota", "message": "no"}}})
    with pytest.raises(Exception) as info:
        run(gateway, client, task_dir)
    assert info.value.category == "quota_exhausted"


def test_large_b64_image_is_decoded_without_extra_copies(gateway, client, task_dir):
    """A 6 MB image as b64_json peaks under 3x its size: the raw body plus the decoded bytes, no str copy."""
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(6 * 1024 * 1024)
    body = orjson.dumps({"data": [{"b64_json": base64.b64encode(image).decode()}]})
    gateway.script("generations", {"status": 200, "body": body})
    tracemalloc.start()
    try:
        result = run(gateway, client, task_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.image == image
    assert peak < 3 * len(image), f"peak {peak / len(image):.1f}x the image size"


# --- check ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,reason", [
    ("1000x1000", "multiples of 16"),
    ("3840x1024", "between 1:3 and 3:1"),
    ("4096x2048", "longest edge"),
    ("512x512", "total pixels"),
    ("3840x2400", "total pixels"),
    ("4:1", "between 1:3 and 3:1"),
    ("big", "WxH"),
])
def test_check_rejects_sizes_gpt_image_2_cannot_make(size, reason):
    """gpt-image-2 size rules: multiples of 16, 1:3–3:1, edge ≤ 3840, 655,360–8,294,400 pixels."""
    config = provider_config(KIND, "http://unused")
    with pytest.raises(UsageError, match=reason):
        OpenAIImagesProvider.check(make_request(None, size=size), config)


@pytest.mark.parametrize("size", ["auto", "1024x1024", "3840x2160", "2160x3840", "1536x512", "16:9"])
def test_check_accepts_valid_gpt_image_2_sizes(size):
    """auto, the classic sizes, 4K landscape/portrait and mapped ratios pass."""
    OpenAIImagesProvider.check(make_request(None, size=size), provider_config(KIND, "http://unused"))


def test_ratios_map_to_a_valid_size_per_model(gateway, client, task_dir):
    """16:9 becomes 1536x864 for gpt-image-2 and the nearest classic size for gpt-image-1."""
    run(gateway, client, task_dir, size="16:9")
    run(gateway, client, task_dir, size="16:9", model="gpt-image-1")
    sent = [c.json["size"] for c in gateway.calls("generations")]
    assert sent == ["1536x864", "1536x1024"]
    with pytest.raises(UsageError, match="1024x1024"):
        OpenAIImagesProvider.check(make_request(None, size="1600x900", model="gpt-image-1"),
                                   provider_config(KIND, "http://unused"))


def test_check_rejects_prompts_images_masks_and_option_combinations(tmp_path):
    """Over-long prompts, > 16 images, missing files, a lone mask and impossible options fail early."""
    config = provider_config(KIND, "http://unused")
    ref = str(png_file(tmp_path))
    cases = [
        (dict(prompt="x" * 32001), "at most 32000"),
        (dict(images=[ref] * 17), "at most 16"),
        (dict(images=[str(tmp_path / "missing.png")]), "does not exist"),
        (dict(images=[str(tmp_path)]), "not a regular file"),
        (dict(mask=ref), "mask needs"),
        (dict(output_compression=50), "needs output_format jpeg or webp"),
        (dict(background="transparent", output_format="jpeg"), "transparent background"),
    ]
    for fields, reason in cases:
        with pytest.raises(UsageError, match=reason):
            OpenAIImagesProvider.check(make_request(None, **fields), config)
    OpenAIImagesProvider.check(make_request(None, prompt="x" * 32000, images=[ref] * 16), config)


def test_a_reference_deleted_after_check_fails_as_local_input_without_a_request(gateway, client, task_dir, tmp_path):
    """generate re-checks: a file gone since admission is local_input and nothing is sent."""
    ref = png_file(tmp_path)
    config = provider_config(KIND, gateway.openai_base)
    request = make_request(task_dir, images=[str(ref)])
    OpenAIImagesProvider.check(request, config)
    ref.unlink()
    with pytest.raises(LocalInputError):
        OpenAIImagesProvider(config, api_key=KEY).generate(request, client=client)
    assert gateway.calls() == []
