"""Image providers. See base.py for the contract and the registry."""

from image_queue.providers.base import (
    GenerationRequest,
    GenerationResult,
    Provider,
    get_provider,
    provider_kinds,
    sniff_image_format,
)

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "Provider",
    "get_provider",
    "provider_kinds",
    "sniff_image_format",
]
