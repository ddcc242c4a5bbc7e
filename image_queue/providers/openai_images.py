"""The `openai-images` provider: OpenAI's Images API and every gateway that copies it.

Text to image is `POST {base}/images/generations` (JSON); with reference images it is
`POST {base}/images/edits` (multipart: one file as `image`, several as repeated `image[]`, optional
`mask`; edits take no `moderation`). URL references are downloaded first (size-limited) and uploaded
like local files. The answer's `b64_json` is decoded, or its `url` downloaded. `response_format` is
sent only when the provider config sets it: GPT image models reject it.

Config: `paths.generations` / `paths.edits` override the paths; `options.extra_fields` (a table) is
merged into every request body for gateway-specific fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from image_queue.errors import BadResponseError
from image_queue.http import HTTP, Reply, clean_text, error_from_payload
from image_queue.providers import checks
from image_queue.providers.base import GenerationRequest, GenerationResult
from image_queue.providers.media import image_result, load_reference, parse_with_image
from image_queue.providers.remote import HTTPProvider

if TYPE_CHECKING:
    from image_queue.config import ProviderConfig

GENERATIONS_PATH = "/images/generations"
EDITS_PATH = "/images/edits"


class OpenAIImagesProvider(HTTPProvider):
    kind: ClassVar[str] = "openai-images"

    @classmethod
    def check(cls, request: GenerationRequest, config: "ProviderConfig") -> None:
        checks.check_prompt(request.prompt)
        checks.openai_size(request.size, request.model or config.model)
        checks.check_references(request.images, request.mask)
        checks.check_output_options(request.output_format, request.output_compression, request.background)

    def _generate(self, http: HTTP, request: GenerationRequest) -> GenerationResult:
        model = request.model or self.config.model
        size = checks.openai_size(request.size, model)
        fields = self._fields(request, model, size)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        common = dict(stage="generate", headers=headers, max_attempts=request.max_attempts, billable=True,
                      handle=_parse_images_reply)
        if request.images:
            fields.pop("moderation", None)
            files = self._files(http, request)
            data = {k: str(v) for k, v in fields.items()}
            image, url, meta = http.call("POST", http.url("edits", EDITS_PATH), data=data, files=files, **common)
            del files
        else:
            image, url, meta = http.call("POST", http.url("generations", GENERATIONS_PATH), json=fields, **common)
        if image is None:
            image = http.download(url, stage="download")
        return image_result(
            image, http=http, model=meta.get("model") or model, mode=request.mode, http_status=meta["http_status"],
            usage=meta.get("usage"), revised_prompt=meta.get("revised_prompt"),
            details={"endpoint": "edits" if request.images else "generations", "size_sent": size,
                     "result_via": "b64_json" if url is None else "url"},
        )

    def _fields(self, request: GenerationRequest, model: str | None, size: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": 1, "size": size,
                                  "quality": request.quality, "background": request.background,
                                  "output_format": request.output_format,
                                  "output_compression": request.output_compression,
                                  "moderation": request.moderation,
                                  "response_format": self.config.response_format}
        fields.update(self.config.options.get("extra_fields") or {})
        return {k: v for k, v in fields.items() if v is not None}

    @staticmethod
    def _files(http: HTTP, request: GenerationRequest) -> list[tuple[str, Any]]:
        field = "image" if len(request.images) == 1 else "image[]"
        files: list[tuple[str, Any]] = [(field, load_reference(http, ref)) for ref in request.images]
        if request.mask:
            files.append(("mask", load_reference(http, request.mask, what="mask")))
        return files


def _first_item(payload: Any) -> Any:
    items = payload.get("data") if isinstance(payload, dict) else None
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None


def _parse_images_reply(reply: Reply) -> tuple[bytes | None, str | None, dict[str, Any]]:
    """(image bytes or None, url or None, metadata) from an Images API answer; runs inside the attempt."""
    status = reply.status
    payload, image = parse_with_image(reply.take_body(), "b64_json", _first_item, http_status=status)
    item = _first_item(payload)
    if item is None:
        if isinstance(payload, dict) and payload.get("error"):
            raise error_from_payload(payload, status=status, stage="generate")
        raise BadResponseError(f"HTTP {status} answer has no `data` list with an image", http_status=status)
    url = item.get("url")
    meta = {"http_status": status, "usage": payload.get("usage"), "revised_prompt": item.get("revised_prompt"),
            "model": clean_text(payload["model"], limit=100) if isinstance(payload.get("model"), str) else None}
    if image is not None:
        return image, None, meta
    if isinstance(url, str) and url:
        return None, url, meta
    raise BadResponseError(f"HTTP {status} answer has neither `b64_json` nor `url`", http_status=status)
