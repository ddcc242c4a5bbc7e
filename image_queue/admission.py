"""Reading a tasks file and deciding what runs (CONTRACT.md §3–4).

`load_tasks` turns `@file`, `@-` or `.jsonl` into raw task dicts plus batch options;
`plan_admission` is a pure function from those, the config and the store's completed keys to a
plan: every submitted task gets exactly one action — run, reuse, skip or reject — with a reason.
Nothing is ever dropped silently.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
from pydantic import ValidationError

from image_queue.config import Config, ProviderConfig
from image_queue.errors import ImageQueueError, TasksFileError
from image_queue.models import BatchOptions, TaskSpec
from image_queue.providers.base import GenerationRequest, get_provider

TASK_FIELDS = frozenset(TaskSpec.model_fields) | {"input_images", "input_image", "image", "reference_image"}
BATCH_FIELDS = frozenset(BatchOptions.model_fields)
MOCK_FIELDS = ("mock_sleep", "mock_exit_code", "mock_output_text", "mock_command")


@dataclass
class TasksFile:
    tasks: list[Any]
    options: BatchOptions
    defaults: dict[str, Any]
    source: str


@dataclass
class PlanItem:
    index: int
    raw: Any
    action: str  # run | reuse | skip | reject
    reason: str | None = None
    spec: TaskSpec | None = None
    provider: ProviderConfig | None = None
    reused_from: dict[str, Any] | None = None
    key: str | None = None
    name: str | None = None


@dataclass
class Plan:
    items: list[PlanItem]
    capacity: int
    options: BatchOptions = field(default_factory=BatchOptions)

    def by_action(self, action: str) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TasksFileError(f"{source}: not UTF-8 text (bad byte at line {line}, byte offset {exc.start})") from None


def _parse_json(text: str, source: str, line_offset: int = 0) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TasksFileError(
            f"{source}: not valid JSON at line {exc.lineno + line_offset}, column {exc.colno}: {exc.msg}"
        ) from None


def load_tasks(arg: str, *, stdin: Callable[[], bytes] | None = None) -> TasksFile:
    """Read `@path`, `@-` (stdin) or a bare path; `.jsonl` (or JSON lines on stdin) one task a line."""
    ref = arg[1:] if arg.startswith("@") else arg
    if ref == "-":
        source = "<stdin>"
        data = (stdin or sys.stdin.buffer.read)()
    else:
        source = ref
        try:
            data = Path(ref).read_bytes()
        except FileNotFoundError:
            raise TasksFileError(f"tasks file {ref} does not exist") from None
        except IsADirectoryError:
            raise TasksFileError(f"tasks file {ref} is a directory") from None
        except OSError as exc:
            raise TasksFileError(f"cannot read tasks file {ref}: {exc.strerror}") from None
    text = _decode(data, source)
    if not text.strip():
        raise TasksFileError(f"{source} is empty: expected a JSON list of tasks, {{\"tasks\": [...]}} or JSON lines")
    is_jsonl = source.endswith(".jsonl")
    if not is_jsonl and source == "<stdin>":
        stripped = text.lstrip()
        is_jsonl = stripped.startswith("{") and "\n{" in text.strip() and '"tasks"' not in stripped[:200]
    if is_jsonl:
        tasks = [
            _parse_json(line, source, line_offset=n)
            for n, line in enumerate(text.splitlines())
            if line.strip() and not line.lstrip().startswith("//")
        ]
        doc: Any = tasks
    else:
        doc = _parse_json(text, source)
    return _split_document(doc, source)


def _split_document(doc: Any, source: str) -> TasksFile:
    if isinstance(doc, list):
        tasks, top = doc, {}
    elif isinstance(doc, dict) and "tasks" in doc:
        tasks, top = doc["tasks"], {k: v for k, v in doc.items() if k != "tasks"}
        if not isinstance(tasks, list):
            raise TasksFileError(f"{source}: \"tasks\" must be a list, not {type(tasks).__name__}")
    elif isinstance(doc, dict):
        tasks, top = [doc], {}  # a single task object
    else:
        raise TasksFileError(f"{source}: expected a list of tasks or {{\"tasks\": [...]}}, not {type(doc).__name__}")
    if not tasks:
        raise TasksFileError(f"{source}: the tasks list is empty; nothing to do")
    unknown = sorted(set(top) - BATCH_FIELDS - TASK_FIELDS)
    if unknown:
        raise TasksFileError(f"{source}: unknown batch-level field(s) {', '.join(map(repr, unknown))}")
    try:
        options = BatchOptions.model_validate({k: v for k, v in top.items() if k in BATCH_FIELDS})
    except ValidationError as exc:
        raise TasksFileError(f"{source}: {describe_validation_error(exc)}") from None
    defaults = {k: v for k, v in top.items() if k in TASK_FIELDS}
    return TasksFile(tasks=tasks, options=options, defaults=defaults, source=source)


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A pydantic error as one readable line: which field, what is wrong."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r} (check the spelling; see the tasks.json fields in the README)")
        elif err["type"] == "missing":
            parts.append(f"field {loc!r} is required")
        else:
            parts.append(f"{('field ' + repr(loc) + ': ') if loc else ''}{msg}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def safe_name(name: str, limit: int = 80) -> str:
    """A filesystem-safe file stem: no slashes, NUL, dot-dot or leading dots; never empty."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")
    return stem[:limit].rstrip("._-") or "task"


def request_for(spec: TaskSpec, provider: ProviderConfig, *, task_id: str = "", task_dir: Path | None = None,
                max_attempts: int = 3) -> GenerationRequest:
    return GenerationRequest(
        task_id=task_id,
        task_key=spec.key,
        prompt=spec.prompt or "",
        model=spec.model or provider.model,
        size=spec.size,
        quality=spec.quality,
        background=spec.background,
        output_format=spec.output_format,
        output_compression=spec.output_compression,
        moderation=spec.moderation,
        images=tuple(spec.images),
        mask=spec.mask,
        output_resolution=spec.output_resolution,
        max_attempts=spec.max_attempts or max_attempts,
        task_dir=task_dir,
        extra={k: getattr(spec, k) for k in MOCK_FIELDS if getattr(spec, k) is not None},
    )


def _validate_one(raw: Any, defaults: dict[str, Any], overrides: dict[str, Any], config: Config) -> tuple[TaskSpec, ProviderConfig]:
    if not isinstance(raw, dict):
        raise ValueError(f"a task must be a JSON object, not {type(raw).__name__}")
    merged = {**defaults, **raw, **{k: v for k, v in overrides.items() if v is not None}}
    spec = TaskSpec.model_validate(merged)
    provider = config.provider(spec.provider)
    used_mock = [f for f in MOCK_FIELDS if getattr(spec, f) is not None]
    if used_mock and provider.kind != "mock":
        raise ValueError(f"{used_mock[0]} only works with the mock provider, not {provider.name!r} ({provider.kind})")
    if spec.prompt is None:
        raise ValueError("prompt is required")
    get_provider(provider.kind).check(request_for(spec, provider), provider)
    return spec, provider


def plan_admission(
    tasks_file: TasksFile,
    *,
    config: Config,
    capacity: int,
    completed: Callable[[list[str]], dict[str, dict[str, Any]]],
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> Plan:
    """validate → dedupe → reuse → capacity. `completed(keys)` returns earlier completed records by key."""
    overrides = overrides or {}
    items: list[PlanItem] = []
    for index, raw in enumerate(tasks_file.tasks):
        item = PlanItem(index=index, raw=raw, action="run")
        try:
            item.spec, item.provider = _validate_one(raw, tasks_file.defaults, overrides, config)
            item.key, item.name = item.spec.key, item.spec.name
        except ValidationError as exc:
            item.action, item.reason = "reject", f"task {index}: {describe_validation_error(exc)}"
        except (ValueError, ImageQueueError) as exc:
            item.action, item.reason = "reject", f"task {index}: {str(exc).removeprefix('Value error, ')}"
        if item.spec is None and isinstance(raw, dict):
            item.key = str(raw.get("task_key") or raw.get("task_name") or "") or None
            item.name = str(raw.get("task_name") or item.key or "") or None
        items.append(item)

    first_by_key: dict[str, int] = {}
    for item in items:
        if item.action != "run":
            continue
        assert item.key is not None
        if item.key in first_by_key:
            item.action, item.reason = "skip", f"duplicate task_key {item.key!r} (task {first_by_key[item.key]} runs it)"
        else:
            first_by_key[item.key] = item.index

    if not force:
        earlier = completed([i.key for i in items if i.action == "run" and i.key])
        for item in items:
            if item.action == "run" and item.key in earlier:
                item.action, item.reused_from = "reuse", earlier[item.key]
                item.reason = f"completed earlier by task {earlier[item.key]['task_id']}"

    admitted = 0
    for item in items:
        if item.action == "run":
            if admitted < capacity:
                admitted += 1
            else:
                item.action = "reject"
                item.reason = f"queue_full: only {capacity} tasks are admitted per run (max_workers + max_queue_size)"
    return Plan(items=items, capacity=capacity, options=tasks_file.options)
