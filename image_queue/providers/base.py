"""The provider contract and the registry of provider kinds.

A provider is a small class with a `kind`, built from its resolved config and API key, and one
method, `generate(request, *, client) -> GenerationResult`. It makes exactly one image or raises a
`ProviderError` whose category says why (see errors.py). Providers never build HTTP clients: the
worker passes one in (an `httpx.Client`, or None for providers that need no network).

`check(request)` runs in the supervisor before anything is spent: it rejects requests the API would
refuse (bad size for this kind, too many reference images, prompt too long) with a clear reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from image_queue.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from image_queue.config import ProviderConfig

# kind -> "module:Class"; imported only when that kind is used, so `status` never pays for httpx.
_REGISTRY: dict[str, str] = {
    "mock": "image_queue.providers.mock:MockProvider",
    "openai-images": "image_queue.providers.openai_images:OpenAIImagesProvider",
    "openai-responses": "image_queue.providers.openai_responses:OpenAIResponsesProvider",
    "image2": "image_queue.providers.image2:Image2Provider",
    "runapi": "image_queue.providers.runapi:RunAPIProvider",
}


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a provider needs for one image. `task_dir` is where attempts are recorded."""

    task_id: str
    task_key: str
    prompt: str
    model: str | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    images: tuple[str, ...] = ()
    mask: str | None = None
    output_resolution: str | None = None
    max_attempts: int = 3
    task_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # mock_* knobs

    @property
    def mode(self) -> str:
        return "edit" if self.images else "generation"


@dataclass
class GenerationResult:
    """One image as bytes plus the proof fields result.json reports."""

    image: bytes
    format: str  # png | jpeg | webp, sniffed from the bytes
    model: str | None
    mode: str
    attempts: int = 1
    usage: dict[str, Any] | None = None
    revised_prompt: str | None = None
    http_status: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Provider:
    """Base class; subclasses set `kind` and implement `generate`."""

    kind: ClassVar[str] = ""
    needs_network: ClassVar[bool] = True

    def __init__(self, config: "ProviderConfig", *, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key

    @classmethod
    def check(cls, request: GenerationRequest, config: "ProviderConfig") -> None:
        """Raise UsageError if the API would refuse this request. Spends nothing."""

    def generate(self, request: GenerationRequest, *, client: "httpx.Client | None") -> GenerationResult:
        raise NotImplementedError


def provider_kinds() -> list[str]:
    return sorted(_REGISTRY)


def get_provider(kind: str) -> type[Provider]:
    """The provider class of a kind; a ConfigError listing the valid kinds otherwise."""
    target = _REGISTRY.get(kind)
    if target is None:
        raise ConfigError(f"unknown provider kind {kind!r}; valid kinds: {', '.join(provider_kinds())}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"provider kind {kind!r} is not available in this build ({exc})") from exc
    return getattr(module, class_name)


def sniff_image_format(data: bytes) -> str | None:
    """png | jpeg | webp from the magic bytes, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
