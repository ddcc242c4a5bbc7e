"""One contract every real provider keeps, run against each kind on the fake gateway."""

from __future__ import annotations

import pytest

from image_queue.errors import ProviderError, UsageError
from image_queue.providers.base import GenerationResult, get_provider, sniff_image_format
from tests.gateway_fixtures import KEY, attempts, base_for, generate, make_request, provider_config
from tests.gateway_fixtures import client, gateway, task_dir  # noqa: F401  (pytest fixtures, used by name)

KINDS = ["openai-images", "openai-responses", "image2", "runapi"]
CREATE_ROUTE = {"openai-images": "generations", "openai-responses": "responses", "image2": "image2.create",
                "runapi": "runapi.create"}
JOURNAL_FIELDS = {"attempt", "method", "url", "status", "latency_seconds", "error", "category", "billed_maybe",
                  "started_at"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_success_is_one_real_image_with_proof_fields(kind, gateway, client, task_dir):
    """generate returns image bytes whose sniffed format matches, the mode, model, attempts and status."""
    result = generate(kind, gateway, client, task_dir)
    assert isinstance(result, GenerationResult)
    assert get_provider(kind).kind == kind
    assert result.format == sniff_image_format(result.image) == "png"
    assert result.mode == "generation" and result.model and result.attempts == 1 and result.http_status == 200
    lines = attempts(task_dir)
    assert lines and all(JOURNAL_FIELDS <= set(line) for line in lines)
    assert sum(1 for line in lines if line["method"] == "POST") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_key_never_appears_in_errors_or_the_journal(kind, gateway, client, task_dir):
    """An error body echoing the auth headers is redacted in the error and in attempts.jsonl."""
    gateway.script(CREATE_ROUTE[kind], {"echo_auth": True, "status": 401})
    with pytest.raises(ProviderError) as info:
        generate(kind, gateway, client, task_dir)
    assert info.value.category == "auth"
    assert KEY not in str(info.value) and KEY not in repr(info.value.context)
    assert KEY not in (task_dir / "attempts.jsonl").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_request_never_reaches_the_network(kind, gateway, client, task_dir):
    """check() refuses an over-long prompt; generate() refuses it too, without any request."""
    config = provider_config(kind, base_for(kind, gateway))
    request = make_request(task_dir, prompt="z" * 40_000)
    with pytest.raises(UsageError):
        get_provider(kind).check(request, config)
    with pytest.raises(ProviderError) as info:
        get_provider(kind)(config, api_key=KEY).generate(request, client=client)
    assert info.value.category == "invalid_request"
    assert gateway.calls() == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_task_dir_means_no_journal_and_no_crash(kind, gateway, client):
    """A request without task_dir still works (nothing is journaled)."""
    assert generate(kind, gateway, client, None).format == "png"


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreachable_gateway_is_a_network_error_never_billed(kind, client, task_dir):
    """Connection refused: category network, billed_maybe false, journaled as not billed."""
    config = provider_config(kind, "http://127.0.0.1:9", connect_timeout_seconds=1)
    with pytest.raises(ProviderError) as info:
        generate(kind, None, client, task_dir, config=config, max_attempts=1)
    assert info.value.category == "network"
    assert info.value.context["billed_maybe"] is False and info.value.context["attempts"] == 1
    assert [line["billed_maybe"] for line in attempts(task_dir)] == [False]


def test_a_failure_after_a_paid_create_says_money_may_be_spent(gateway, client, task_dir):
    """A poll timeout after a successful create reports attempts 1 and billed_maybe true."""
    gateway.pending_polls = 10_000
    config = provider_config("runapi", gateway.base_url, poll_timeout_seconds=0.2, poll_interval_seconds=0.05)
    with pytest.raises(ProviderError) as info:
        generate("runapi", gateway, client, task_dir, config=config)
    assert info.value.context["attempts"] == 1 and info.value.context["billed_maybe"] is True
