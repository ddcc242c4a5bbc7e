"""Pydantic models of what users hand us: one task, and a batch's own keys (CONTRACT.md §3)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from image_queue.sizes import parse_size
from image_queue.status import Status

__all__ = ["TaskSpec", "BatchOptions", "Status", "IMAGE_ALIASES", "parse_size", "MAX_WORKERS_CAP", "MAX_QUEUE_CAP"]

MAX_WORKERS_CAP = 4
MAX_QUEUE_CAP = 100
MAX_ATTEMPTS_CAP = 5
IMAGE_ALIASES = ("images", "input_images", "input_image", "image", "reference_image")
class TaskSpec(BaseModel):
    """One image to make. Unknown fields are errors so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)

    task_key: str | None = Field(default=None, min_length=1, max_length=200)
    task_name: str | None = Field(default=None, min_length=1, max_length=200)
    prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    size: str | None = None
    quality: Literal["low", "medium", "high", "auto", "standard", "hd"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    moderation: Literal["auto", "low"] | None = None
    images: list[str] = Field(default_factory=list)
    mask: str | None = None
    output_resolution: Literal["1k", "2k", "4k"] | None = None
    task_timeout_seconds: float | None = Field(default=None, gt=0, le=86400)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_CAP)
    metadata: dict[str, Any] = Field(default_factory=dict)
    mock_sleep: float | None = Field(default=None, ge=0, le=86400)
    mock_exit_code: int | None = Field(default=None, ge=0, le=255)
    mock_output_text: str | None = None
    mock_command: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_image_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"a task must be a JSON object, not {type(data).__name__}")
        given = [k for k in IMAGE_ALIASES if k in data and data[k] is not None]
        if len(given) > 1:
            raise ValueError(f"give reference images once, not as both {given[0]!r} and {given[1]!r}")
        merged = {k: v for k, v in data.items() if k not in IMAGE_ALIASES}
        if given:
            merged["images"] = data[given[0]]
        return merged

    @field_validator("images", mode="before")
    @classmethod
    def _images_as_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("prompt is empty")
        return v

    @field_validator("task_key")
    @classmethod
    def _no_control_chars(cls, v: str | None) -> str | None:
        # a key is an identifier people type and grep for; a name is only made file-safe (safe_name)
        if v is not None and any(ord(c) < 32 for c in v):
            raise ValueError("must not contain control characters (NUL, newline, tab …)")
        return v

    @field_validator("size")
    @classmethod
    def _size_shape(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v)
        return v

    @model_validator(mode="after")
    def _needs_prompt(self) -> "TaskSpec":
        if self.prompt is None and self.mock_command is None:
            raise ValueError("prompt is required")
        return self

    @property
    def key(self) -> str:
        """The idempotency key: task_key, else task_name, else a hash of the task's content."""
        if self.task_key:
            return self.task_key
        if self.task_name:
            return self.task_name
        body = self.model_dump(exclude={"metadata"}, exclude_none=True)
        return "task-" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]

    @property
    def name(self) -> str:
        return self.task_name or self.key

    @property
    def is_edit(self) -> bool:
        return bool(self.images)


class BatchOptions(BaseModel):
    """Batch-level keys of a tasks file, besides task defaults."""

    model_config = ConfigDict(extra="forbid")

    batch_name: str | None = Field(default=None, max_length=200)
    max_workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS_CAP)
    max_queue_size: int | None = Field(default=None, ge=1, le=MAX_QUEUE_CAP)
    task_timeout_seconds: float | None = Field(default=None, gt=0, le=86400)
