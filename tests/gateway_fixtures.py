"""Fixtures and helpers shared by the provider tests (imported by name into each test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from image_queue.config import ProviderConfig
from image_queue.providers.base import GenerationRequest, GenerationResult, get_provider
from image_queue.providers.mock import placeholder_png
from tests.fake_gateway import FakeGateway

KEY = "sk-test-SECRETkey0123456789abcdef"


@pytest.fixture
def gateway() -> Any:
    with FakeGateway() as gw:
        yield gw


@pytest.fixture
def client() -> Any:
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture
def task_dir(tmp_path: Path) -> Any:
    """A task dir whose attempts.jsonl is checked, after the test, never to hold the key."""
    d = tmp_path / "task"
    d.mkdir()
    yield d
    journal = d / "attempts.jsonl"
    if journal.exists():
        text = journal.read_text()
        assert KEY not in text and KEY[8:] not in text, "the API key leaked into attempts.jsonl"


def provider_config(kind: str, base_url: str, **overrides: Any) -> ProviderConfig:
    """Short timeouts and fast polls so the suite stays quick."""
    fields: dict[str, Any] = dict(name=f"test-{kind}", kind=kind, base_url=base_url, api_key_env="TEST_KEY",
                                  model={"image2": "GPT-Image-2"}.get(kind, "gpt-image-2"),
                                  request_timeout_seconds=5, connect_timeout_seconds=2,
                                  poll_interval_seconds=0.01, poll_timeout_seconds=5)
    fields.update(overrides)
    return ProviderConfig(**fields)


def base_for(kind: str, gw: FakeGateway) -> str:
    return gw.openai_base if kind.startswith("openai") else gw.base_url


def make_request(task_dir: Path | None, **fields: Any) -> GenerationRequest:
    fields.setdefault("prompt", "a red fox in snow")
    if "images" in fields:
        fields["images"] = tuple(fields["images"])
    return GenerationRequest(task_id="t-1", task_key="fox", task_dir=task_dir, **fields)


def generate(kind: str, gw: FakeGateway, client: httpx.Client, task_dir: Path | None, *,
             config: ProviderConfig | None = None, key: str = KEY, **fields: Any) -> GenerationResult:
    """check() then generate() exactly as the supervisor and worker would."""
    config = config or provider_config(kind, base_for(kind, gw))
    cls = get_provider(kind)
    request = make_request(task_dir, **fields)
    cls.check(request, config)
    return cls(config, api_key=key).generate(request, client=client)


def attempts(task_dir: Path) -> list[dict[str, Any]]:
    path = task_dir / "attempts.jsonl"
    return [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def png_file(directory: Path, name: str = "ref.png", size: tuple[int, int] = (32, 32)) -> Path:
    path = directory / name
    path.write_bytes(placeholder_png(*size, name))
    return path
