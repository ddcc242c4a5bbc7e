"""The `image2` provider: kexiangai's async task API (credits are charged on every create).

Create `POST {base}/api/v1/user_task/asyncCreateWithCost` (header `x-api-key`) exactly once, poll
`GET {base}/api/v1/user_task/get/passAuth/{id}` until the task is terminal, download the image URL.
Sizes are ratios only: a `WxH` (or an unlisted `W:H`) maps to the nearest listed ratio when within
15 %, else `check` rejects it. Reference images are 1–8 public URLs.

Config: `paths.create`, `paths.status` (with `{id}`); `options.business_url` (default "gpt-image2/img").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from image_queue.http import HTTP
from image_queue.providers import checks
from image_queue.providers.async_tasks import TaskState, create_task, image_urls, poll_task
from image_queue.providers.base import GenerationRequest, GenerationResult
from image_queue.providers.media import image_result
from image_queue.providers.remote import HTTPProvider

if TYPE_CHECKING:
    from image_queue.config import ProviderConfig

CREATE_PATH = "/api/v1/user_task/asyncCreateWithCost"
STATUS_PATH = "/api/v1/user_task/get/passAuth/{id}"
RATIOS = ("auto", "1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21", "1:3", "3:1", "2:1", "1:2")
DONE = frozenset({"success", "succeeded", "done", "completed"})
FAILED = frozenset({"failed", "error", "canceled", "cancelled"})
MAX_URLS = 8


class Image2Provider(HTTPProvider):
    kind: ClassVar[str] = "image2"

    @classmethod
    def check(cls, request: GenerationRequest, config: "ProviderConfig") -> None:
        checks.check_prompt(request.prompt)
        checks.nearest_ratio(request.size, RATIOS, kind=cls.kind)
        checks.check_url_references(request.images, request.mask, kind=cls.kind, low=1, high=MAX_URLS)

    def _generate(self, http: HTTP, request: GenerationRequest) -> GenerationResult:
        model = request.model or self.config.model or "GPT-Image-2"
        ratio = checks.nearest_ratio(request.size, RATIOS, kind=self.kind) or "auto"
        user_input: dict[str, Any] = {"modelName": model, "modelType": "img2img" if request.images else "text2img",
                                      "prompt": request.prompt, "size": ratio}
        if request.images:
            user_input["urls"] = list(request.images)
        body = {"cost_type": 1, "business_url": self.config.options.get("business_url", "gpt-image2/img"),
                "user_input": user_input}
        headers = {"x-api-key": self.api_key} if self.api_key else {}
        task_id, status, created = create_task(http, http.url("create", CREATE_PATH), headers=headers, body=body)
        state = poll_task(http, http.url("status", STATUS_PATH, id=task_id), headers=headers, task_id=task_id,
                          read=_read_state)
        image = http.download(state.urls[0], stage="download")
        cost = created.get("cost")
        return image_result(image, http=http, model=model, mode=request.mode, http_status=status,
                            details={"task_id": task_id, "size_sent": ratio,
                                     "cost": cost if isinstance(cost, (int, float, str)) else None})


def _read_state(payload: dict[str, Any]) -> TaskState:
    raw = str(payload.get("task_status") or payload.get("status") or "").lower()
    output = payload.get("service_output") if isinstance(payload.get("service_output"), dict) else {}
    if raw in DONE:
        return TaskState("done", image_urls(output.get("imgUrls")) or image_urls(output.get("imgUrl")), raw_status=raw)
    if raw in FAILED:
        reason = output.get("failReason") or payload.get("failReason") or payload.get("message") or raw
        return TaskState("failed", [], reason=str(reason), raw_status=raw)
    return TaskState("pending", [], raw_status=raw)
