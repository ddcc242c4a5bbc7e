"""The worker: a child process that makes exactly one image.

Started by the supervisor as `python -m image_queue.worker`, usually before its task is known (a
standby): it imports what providers need and, for network providers, builds its HTTP client, then
blocks reading one JSON assignment line from stdin. On assignment it points its stdout/stderr at the
task's stdout.txt/stderr.txt, calls the provider once, writes the image and then result.json
(atomically, bound to the attempt by the supervisor's token and this pid) and leaves with
`os._exit` so interpreter teardown costs the next task nothing.

Exit status: 0 result written and ok, 1 result written and not ok, anything else: no result.

The worker imports no pydantic: the supervisor validated the task and resolved its provider
config already, and hands over the provider request's fields and the config as plain data.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from image_queue.errors import HUMAN_REASONS, ImageQueueError, ProviderError
from image_queue.keys import read_api_key
from image_queue.providers.base import GenerationRequest, get_provider, sniff_image_format
from image_queue.store import atomic_write_bytes, atomic_write_json


def _redact(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def _attach_output(task_dir: Path) -> None:
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        target = os.open(task_dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)


def run_assignment(job: dict[str, Any], client: Any) -> int:
    started = time.time()
    task_dir = Path(job["task_dir"])
    fields = job["request"]
    request = GenerationRequest(**{**fields, "images": tuple(fields["images"])}, task_dir=task_dir)
    provider_config: Any = SimpleNamespace(**job["provider"])  # every field of a validated ProviderConfig
    binding = {"token": job["token"], "worker_pid": os.getpid(), "attempt": job["attempt"], "run_id": job["run_id"]}
    result: dict[str, Any] = {
        "ok": False,
        "status": "failed",
        "stage": "start",
        "task_id": job["task_id"],
        "task_key": request.task_key,
        "image_path": None,
        "bytes": None,
        "sha256": None,
        "provider": provider_config.name,
        "provider_kind": provider_config.kind,
        "model": request.model,
        "mode": request.mode,
        "input_images": list(request.images),
        "size": request.size,
        "attempts": 0,
        "metadata": job.get("metadata") or {},
        "binding": binding,
    }
    api_key: str | None = None
    try:
        api_key = read_api_key(provider_config)
        provider_cls = get_provider(provider_config.kind)
        provider = provider_cls(provider_config, api_key=api_key)
        if provider_cls.needs_network and job.get("state_dir"):
            _share_rate_limits(job["state_dir"], provider_config)
        result["stage"] = "generate"
        generated = provider.generate(request, client=client)
        result["stage"] = "save"
        fmt = sniff_image_format(generated.image)
        if fmt is None:
            raise ProviderError("the provider returned bytes that are not a PNG, JPEG or WebP image",
                                category="bad_response", stage="decode")
        image_path = Path(job["output_dir"]) / f"{job['image_stem']}.{'jpg' if fmt == 'jpeg' else fmt}"
        atomic_write_bytes(image_path, generated.image)
        result.update(
            ok=True, status="completed", stage="done", image_path=str(image_path.resolve()),
            bytes=len(generated.image), sha256=hashlib.sha256(generated.image).hexdigest(),
            format=fmt, model=generated.model, mode=generated.mode, attempts=generated.attempts,
            http_status=generated.http_status,
        )
        if generated.usage is not None:
            result["usage"] = generated.usage
        if generated.revised_prompt:
            result["revised_prompt"] = generated.revised_prompt
        if generated.details:
            result["details"] = generated.details
    except ProviderError as exc:
        result.update(
            stage=exc.stage, http_status=exc.http_status, error=_redact(str(exc), api_key),
            diagnosis=exc.diagnosis(), attempts=exc.context.get("attempts", result["attempts"] or 1),
        )
    except ImageQueueError as exc:
        result.update(error=_redact(str(exc), api_key), diagnosis={
            "category": "local_input" if exc.category != "missing_key" else "auth",
            "human_reason": HUMAN_REASONS["local_input" if exc.category != "missing_key" else "auth"],
            "retryable": False,
        })
    result["elapsed_seconds"] = round(time.time() - started, 3)
    result["finished_at"] = time.time()
    atomic_write_json(task_dir / "result.json", result)
    return 0 if result["ok"] else 1


def _share_rate_limits(state_dir: str, config: Any) -> None:
    """Make this worker's HTTP layer wait on, and report to, the state dir's shared limits."""
    from image_queue import http
    from image_queue.ratelimit import SharedRateLimiter

    limiter = SharedRateLimiter(state_dir, images_per_minute={config.name: config.images_per_minute},
                                window_seconds={config.name: config.rate_window_seconds})
    http.set_rate_limit_hooks(before_request=limiter.before_request, on_rate_limited=limiter.on_rate_limited)


def _preload(kinds: list[str]) -> Any:
    """Import provider modules and build the HTTP client now, while no task waits for us."""
    client = None
    for kind in kinds:
        cls = get_provider(kind)
        if cls.needs_network and client is None:
            import httpx

            import image_queue.ratelimit  # noqa: F401  (else imported on assignment: filelock, ~7 ms)

            client = httpx.Client(follow_redirects=False)
            "localhost".encode("idna")  # the first connection encodes its host name with this codec
    return client


def main() -> None:
    kinds = [k for k in os.environ.get("IMAGE_QUEUE_PRELOAD", "").split(",") if k]
    client = _preload(kinds)
    try:
        os.write(1, b"ready\n")  # tells the supervisor to start this slot's next standby (see _on_ready)
    except OSError:
        pass
    line = sys.stdin.buffer.readline()
    if not line.strip():
        os._exit(0)  # released unused: the batch ran out of tasks
    job = orjson.loads(line)
    _attach_output(Path(job["task_dir"]))
    os.environ["IMAGE_QUEUE_TASK_DIR"] = job["task_dir"]  # for mock_command and provider hooks
    os.environ["IMAGE_QUEUE_TASK_ID"] = job["task_id"]
    try:
        code = run_assignment(job, client)
    except SystemExit as exc:  # mock_exit_code: die like a crashed worker, leaving no result
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
