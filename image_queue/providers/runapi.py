"""The `runapi` provider: RunAPI's gpt-image-2 async tasks.

Paths default to RunAPI's own SDK (runapi-ai/gpt-image-2-sdk): `POST /api/v1/gpt_image_2/text_to_image`
or `/edit_image` (with `source_image_urls`, 1–16 public URLs), then `GET <that path>/{id}` until done.
The create is made exactly once (the SDK does not retry POSTs either). Auth is `Authorization: Bearer`.
Sizes map to the nearest listed aspect ratio (within 15 %); `output_resolution` is 1k, 2k or 4k, and
1:1 cannot be 4k.

Config: `paths.text_to_image`, `paths.edit_image`, `paths.text_to_image_status`, `paths.edit_image_status`
(with `{id}`); `options.aspect_ratios` (a list) to widen the ratios if your account takes more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from image_queue.errors import UsageError
from image_queue.http import HTTP
from image_queue.providers import checks
from image_queue.providers.async_tasks import TaskState, create_task, image_urls, poll_task
from image_queue.providers.base import GenerationRequest, GenerationResult
from image_queue.providers.media import image_result
from image_queue.providers.remote import HTTPProvider

if TYPE_CHECKING:
    from image_queue.config import ProviderConfig

TEXT_PATH = "/api/v1/gpt_image_2/text_to_image"
EDIT_PATH = "/api/v1/gpt_image_2/edit_image"
# PROTOCOLS.md's list; RunAPI's newer SDK contract lists more, so it is widenable via options.aspect_ratios.
RATIOS = ("auto", "1:1", "9:16", "16:9", "4:3", "3:4")
RESOLUTIONS = ("1k", "2k", "4k")
DONE = frozenset({"completed", "success", "succeeded"})
FAILED = frozenset({"failed", "error", "generate_failed", "create_task_failed", "cancelled", "canceled"})
MAX_URLS = 16


class RunAPIProvider(HTTPProvider):
    kind: ClassVar[str] = "runapi"

    @classmethod
    def check(cls, request: GenerationRequest, config: "ProviderConfig") -> None:
        checks.check_prompt(request.prompt)
        ratio = checks.nearest_ratio(request.size, _ratios(config), kind=cls.kind)
        if request.output_resolution is not None and request.output_resolution not in RESOLUTIONS:
            raise UsageError(f"output_resolution must be one of {', '.join(RESOLUTIONS)}")
        if ratio == "1:1" and request.output_resolution == "4k":
            raise UsageError("runapi cannot make a 1:1 image at 4k; use 2k or another aspect ratio")
        checks.check_url_references(request.images, request.mask, kind=cls.kind, low=1, high=MAX_URLS)

    def _generate(self, http: HTTP, request: GenerationRequest) -> GenerationResult:
        model = request.model or self.config.model or "gpt-image-2"
        ratio = checks.nearest_ratio(request.size, _ratios(self.config), kind=self.kind)
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "aspect_ratio": ratio,
                                "output_resolution": request.output_resolution}
        if request.images:
            body["source_image_urls"] = list(request.images)
        body = {k: v for k, v in body.items() if v is not None}
        key = "edit_image" if request.images else "text_to_image"
        create_url = http.url(key, EDIT_PATH if request.images else TEXT_PATH)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        task_id, status, _ = create_task(http, create_url, headers=headers, body=body)
        status_url = http.url(f"{key}_status", create_url.rstrip("/") + "/{id}", id=task_id)
        state = poll_task(http, status_url, headers=headers, task_id=task_id, read=_read_state)
        image = http.download(state.urls[0], stage="download")
        return image_result(image, http=http, model=model, mode=request.mode, http_status=status,
                            details={"task_id": task_id, "size_sent": ratio,
                                     "output_resolution": request.output_resolution})


def _ratios(config: "ProviderConfig") -> tuple[str, ...]:
    extra = config.options.get("aspect_ratios")
    return tuple(str(r) for r in extra) if isinstance(extra, list) and extra else RATIOS


def _read_state(payload: dict[str, Any]) -> TaskState:
    raw = str(payload.get("status") or payload.get("task_status") or "").lower()
    if raw in DONE:
        return TaskState("done", image_urls(payload.get("images")) or image_urls(payload.get("image_urls")),
                         raw_status=raw)
    if raw in FAILED:
        error = payload.get("error")
        reason = error.get("message") if isinstance(error, dict) else error
        return TaskState("failed", [], reason=str(reason or raw), raw_status=raw)
    return TaskState("pending", [], raw_status=raw)
