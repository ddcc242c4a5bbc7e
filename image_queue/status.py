"""Task statuses (CONTRACT.md §5). Kept free of pydantic so inspection commands start fast."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    REUSED = "reused"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    ORPHAN_LATE_OUTPUT = "orphan_late_output"
    ORPHANED = "orphaned"

    def __str__(self) -> str:
        return self.value


ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
OK = frozenset({Status.COMPLETED, Status.REUSED})
ALL_STATUSES = tuple(s.value for s in Status)


def summarize(statuses: list[str]) -> dict[str, object]:
    """The `summary` object of batch_result.json: ok, total and a count for every status."""
    counts = {s: 0 for s in ALL_STATUSES}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    ok = bool(statuses) and all(s in (Status.COMPLETED.value, Status.REUSED.value) for s in statuses)
    return {"ok": ok, "total": len(statuses), **counts}
