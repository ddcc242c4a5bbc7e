"""The `openai-responses` provider: a text model calling the `image_generation` tool.

`POST {base}/responses` with `tools: [{"type": "image_generation", ...}]`, `store: false`, either as
one JSON answer (the image is `output[i].result` of the `image_generation_call` item) or, with
`stream = true` in the provider config, as server-sent events (the image comes in
`response.output_item.done`, else in `response.completed`; partial images are counted, never kept).

Gateways sometimes answer plain text with `tools: []` (the tool was dropped), or put a rate limit in
the text ("Please try again in 1234ms"). Both count as retryable attempts, bounded by max_attempts
like every other retry: each attempt is a billable POST.

Config: `paths.responses`; `options.image_model` (the tool's `model`), `options.tool_choice`
(default "auto"), `options.partial_images` (0–3, streaming only), `options.text_retry_delay_seconds`
(default 2).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from image_queue.errors import BadResponseError, ProviderError
from image_queue.http import HTTP, Reply, clean_text, error_from_payload, retry_after_from_text
from image_queue.providers import checks
from image_queue.providers.base import GenerationRequest, GenerationResult
from image_queue.providers.media import image_result, load_reference, parse_with_image
from image_queue.providers.remote import HTTPProvider

if TYPE_CHECKING:
    import httpx

    from image_queue.config import ProviderConfig

RESPONSES_PATH = "/responses"
DEFAULT_IMAGE_MODEL = "gpt-image-2"  # for size rules only; the tool's model is sent only when configured


class OpenAIResponsesProvider(HTTPProvider):
    kind: ClassVar[str] = "openai-responses"

    @classmethod
    def check(cls, request: GenerationRequest, config: "ProviderConfig") -> None:
        checks.check_prompt(request.prompt)
        checks.openai_size(request.size, config.options.get("image_model") or DEFAULT_IMAGE_MODEL)
        checks.check_references(request.images, request.mask)
        checks.check_output_options(request.output_format, request.output_compression, request.background)

    def _generate(self, http: HTTP, request: GenerationRequest) -> GenerationResult:
        model = request.model or self.config.model
        body = self._body(http, request, model)
        stream = bool(self.config.stream)
        parse = _Parser(float(self.config.options.get("text_retry_delay_seconds", 2.0)), http.secrets,
                        max_line=self.config.max_download_bytes * 4 // 3 + 1024 * 1024)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if stream:
            headers["accept"] = "text/event-stream"
        image, meta = http.call("POST", http.url("responses", RESPONSES_PATH), stage="generate", headers=headers,
                                json=body, max_attempts=request.max_attempts, billable=True, stream=stream,
                                handle=parse.stream if stream else parse.json)
        del body
        return image_result(image, http=http, model=model, mode=request.mode, http_status=meta["http_status"],
                            usage=meta.get("usage"), revised_prompt=meta.get("revised_prompt"),
                            details={"stream": stream, "partial_images": meta.get("partial_images", 0),
                                     "size_sent": meta.get("size")})

    def _body(self, http: HTTP, request: GenerationRequest, model: str | None) -> dict[str, Any]:
        options = self.config.options
        image_model = options.get("image_model")
        tool: dict[str, Any] = {"type": "image_generation", "output_format": request.output_format or "png",
                                "model": image_model,
                                "size": checks.openai_size(request.size, image_model or DEFAULT_IMAGE_MODEL),
                                "quality": request.quality, "background": request.background,
                                "output_compression": request.output_compression,
                                "moderation": request.moderation,
                                "partial_images": options.get("partial_images") if self.config.stream else None}
        if request.mask:
            tool["input_image_mask"] = {"image_url": _image_url(http, request.mask, what="mask")}
        tool = {k: v for k, v in tool.items() if v is not None}
        prompt_input: Any = request.prompt
        if request.images:
            content = [{"type": "input_text", "text": request.prompt}]
            content += [{"type": "input_image", "image_url": _image_url(http, ref)} for ref in request.images]
            prompt_input = [{"role": "user", "content": content}]
        return {"model": model, "input": prompt_input, "tools": [tool],
                "tool_choice": options.get("tool_choice", "auto"), "stream": bool(self.config.stream), "store": False}


def _image_url(http: HTTP, ref: str, *, what: str = "reference image") -> str:
    """URLs go as they are (the API fetches them); local files go inline as data URLs."""
    if checks.is_url(ref):
        return ref
    _, data, mime = load_reference(http, ref, what=what)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class _Parser:
    """Finds the image in a Responses answer (JSON or SSE); raises our errors for everything else."""

    def __init__(self, text_retry_delay: float, secrets: tuple[str, ...], *, max_line: int) -> None:
        self.text_retry_delay = text_retry_delay
        self.secrets = secrets
        self.max_line = max_line

    def json(self, reply: Reply) -> tuple[bytes, dict[str, Any]]:
        payload, image = parse_with_image(reply.take_body(), "result", _image_call, http_status=reply.status)
        if not isinstance(payload, dict):
            raise BadResponseError(f"HTTP {reply.status} answer is not a JSON object", http_status=reply.status)
        return self._finish(payload, image, {"http_status": reply.status})

    def stream(self, reply: Reply) -> tuple[bytes, dict[str, Any]]:
        meta: dict[str, Any] = {"http_status": reply.status, "partial_images": 0}
        image: bytes | None = None
        final: dict[str, Any] = {}
        for event, data in _iter_sse(reply.response, self.max_line):
            if data.strip() == b"[DONE]":
                break
            if "partial_image" in event or (not event and b"partial_image" in data[:300]):
                meta["partial_images"] += 1  # never decoded or kept
                continue
            obj, found = parse_with_image(data, "result", _event_holder, want_image=image is None,
                                          http_status=reply.status)
            del data
            if not isinstance(obj, dict):
                continue
            kind = obj.get("type") or event
            if found is not None:
                image = found
                _note_call(_event_holder(obj), meta)
            if kind == "error":
                raise error_from_payload(obj if "error" in obj else {"error": obj}, status=None, stage="generate",
                                         secrets=self.secrets)
            if kind in ("response.failed", "response.incomplete", "response.completed"):
                final = obj.get("response") if isinstance(obj.get("response"), dict) else {}
                if kind == "response.completed":
                    break
                self._raise_if_failed(final)
        return self._finish(final, image, meta)

    def _finish(self, payload: dict[str, Any], image: bytes | None,
                meta: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        if image is None:
            self._raise_if_failed(payload)
        meta["usage"] = payload.get("usage")
        if "revised_prompt" not in meta:
            _note_call(_image_call(payload), meta)
        if image is not None:
            return image, meta
        output = payload.get("output") if isinstance(payload.get("output"), list) else []
        text = clean_text(" ".join(_texts(output)), self.secrets)
        hint = retry_after_from_text(text)
        if hint is not None:
            raise ProviderError(f"rate limited (in the answer text): {text}", category="rate_limited",
                                stage="generate", http_status=meta["http_status"], retryable=True, retry_after=hint)
        if payload.get("tools") == []:
            raise BadResponseError(f"the gateway dropped the image tool and answered text only: {text or '(empty)'}",
                                   http_status=meta["http_status"], retryable=True, retry_after=self.text_retry_delay)
        raise BadResponseError(f"the model answered without an image: {text or '(no text either)'}",
                               http_status=meta["http_status"])

    def _raise_if_failed(self, payload: dict[str, Any]) -> None:
        status = payload.get("status")
        if status in ("failed", "cancelled") or (payload.get("error") and status != "completed"):
            raise error_from_payload(payload if payload.get("error") else {"error": {"code": status}},
                                     status=None, stage="generate", secrets=self.secrets)
        if status == "incomplete":
            details = payload.get("incomplete_details")
            reason = (details.get("reason") if isinstance(details, dict) else None) or "incomplete"
            raise error_from_payload({"error": {"code": str(reason), "message": f"response incomplete: {reason}"}},
                                     status=None, stage="generate", secrets=self.secrets)


def _image_call(response: Any) -> dict[str, Any] | None:
    """The first `image_generation_call` item of a response object's output."""
    output = response.get("output") if isinstance(response, dict) else None
    for item in output if isinstance(output, list) else []:
        if isinstance(item, dict) and item.get("type") == "image_generation_call":
            return item
    return None


def _event_holder(event: Any) -> dict[str, Any] | None:
    """Where an SSE event carries the image: `item` (output_item.done) or `response.output[]` (completed)."""
    if not isinstance(event, dict):
        return None
    item = event.get("item")
    if isinstance(item, dict):
        return item if item.get("type") == "image_generation_call" else None
    return _image_call(event.get("response"))


def _note_call(call: dict[str, Any] | None, meta: dict[str, Any]) -> None:
    if call is not None:
        meta["revised_prompt"] = call.get("revised_prompt")
        meta["size"] = call.get("size") if isinstance(call.get("size"), str) else None


def _texts(output: list[Any]) -> Iterator[str]:
    for item in output:
        if isinstance(item, dict) and isinstance(item.get("content"), list):
            for part in item["content"]:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]


def _iter_sse(response: "httpx.Response", max_line: int) -> Iterator[tuple[str, bytes]]:
    """(event name, data) per server-sent event; lines are capped so a runaway stream cannot eat memory."""
    event, data_lines = "", []
    for line in _iter_lines(response, max_line):
        if not line:
            if data_lines:
                yield event, b"\n".join(data_lines)
            event, data_lines = "", []
        elif line.startswith(b":"):
            continue
        else:
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"event":
                event = value.decode("utf-8", "replace").strip()
            elif name == b"data":
                data_lines.append(value)
    if data_lines:
        yield event, b"\n".join(data_lines)


def _iter_lines(response: "httpx.Response", max_line: int) -> Iterator[bytes]:
    buf, scan = bytearray(), 0
    for chunk in response.iter_bytes():
        buf += chunk
        while True:
            i = buf.find(b"\n", scan)
            if i < 0:
                scan = len(buf)
                break
            line, buf, scan = bytes(buf[:i]).rstrip(b"\r"), buf[i + 1:], 0
            yield line
        if len(buf) > max_line:
            raise BadResponseError(f"a server-sent event line exceeds {max_line} bytes")
    if buf:
        yield bytes(buf).rstrip(b"\r")
