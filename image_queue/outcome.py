"""How a worker's attempt ended, judged from outside: the task's final status and its result.json.

A worker's result.json counts only if it is bound to the attempt: it carries the token the
supervisor handed that attempt and the worker's own pid. Anything else found in the task dir — a
file a stray grandchild wrote after a kill, or a leftover of another attempt — is set aside as
late_result.json and never trusted. When the worker left no usable result (timeout, cancel, crash),
the supervisor writes result.json itself, marked `written_by: supervisor`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from image_queue.status import Status
from image_queue.store import Store, atomic_write_json, read_json

REASONS = {
    "timeout": "The image took longer than the task's time limit, so its worker was stopped.",
    "worker_crash": "The worker process stopped without producing a result; see the task's stderr.txt.",
    "cancelled": "The task was cancelled before it finished.",
    "late_output": "A result arrived that does not belong to this attempt, so it was not trusted.",
}


def diagnosis(category: str) -> dict[str, Any]:
    """The diagnosis object for an outcome the supervisor decided (not the provider)."""
    return {"category": category, "human_reason": REASONS[category], "retryable": category != "late_output"}


def is_bound(result: dict[str, Any] | None, *, token: str | None, worker_pid: int | None) -> bool:
    """True if result.json was written by this attempt's worker."""
    binding = (result or {}).get("binding") or {}
    return bool(result) and token is not None and binding.get("token") == token and \
        binding.get("worker_pid") == worker_pid


def read_result(store: Store, task_id: str) -> dict[str, Any] | None:
    try:
        result = read_json(store.task_dir(task_id) / "result.json")
    except Exception as exc:  # a torn or forged file is not a result
        return {"unreadable": str(exc)}
    if result is None or isinstance(result, dict):
        return result
    return {"unreadable": "not a JSON object"}


def _set_aside(store: Store, record: dict[str, Any], bound: bool) -> None:
    task_dir = store.task_dir(record["task_id"])
    os.replace(task_dir / "result.json", task_dir / "late_result.json")
    record["late_output"] = {"path": str(task_dir / "late_result.json"), "bound_to_attempt": bound,
                             "detected_at": time.time()}


def write_own_result(store: Store, record: dict[str, Any], status: Status, error: str, category: str, *,
                     token: str, worker_pid: int, run_id: str) -> None:
    """Record a status the supervisor decided, in the record and as the task's result.json."""
    record.update(status=status.value, error=error, diagnosis=diagnosis(category), image_path=None)
    atomic_write_json(store.task_dir(record["task_id"]) / "result.json", {
        "ok": False, "status": status.value, "stage": "supervisor", "task_id": record["task_id"],
        "task_key": record["task_key"], "image_path": None, "provider": record.get("provider"),
        "model": record.get("model"), "mode": record.get("mode"), "error": error, "diagnosis": record["diagnosis"],
        "elapsed_seconds": record.get("elapsed_seconds"), "returncode": record.get("returncode"),
        "metadata": record.get("metadata") or {}, "written_by": "supervisor",
        "binding": {"token": token, "worker_pid": worker_pid, "run_id": run_id},
    })


def settle(store: Store, record: dict[str, Any], *, end_reason: str | None, returncode: int, token: str,
           worker_pid: int, timeout: float, run_id: str) -> None:
    """Decide the task's status from how its worker ended (`end_reason`: timeout, cancel, interrupt
    or None for a worker that exited by itself) and what it left behind."""
    result = read_result(store, record["task_id"])
    bound = is_bound(result, token=token, worker_pid=worker_pid)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    own = {"token": token, "worker_pid": worker_pid, "run_id": run_id}
    if end_reason in ("timeout", "cancel", "interrupt"):
        if end_reason == "timeout":
            status, category = Status.TIMED_OUT, "timeout"
            error = f"timed out after {timeout:g} s; worker process group terminated ({how})"
        else:
            status, category = Status.CANCELLED, "cancelled"
            why = "cancelled by request" if end_reason == "cancel" else "the run was interrupted"
            error = f"{why}; worker process group terminated ({how})"
        if result:
            _set_aside(store, record, bound)
        write_own_result(store, record, status, error, category, **own)
    elif not result:
        write_own_result(store, record, Status.FAILED, f"worker {how} without writing a result", "worker_crash", **own)
    elif not bound:
        _set_aside(store, record, False)
        write_own_result(store, record, Status.ORPHAN_LATE_OUTPUT,
                         "result.json does not carry this attempt's token and worker pid; not accepted",
                         "late_output", **own)
    else:
        ok = result.get("ok") is True and result.get("status") == "completed"
        if ok and not (result.get("image_path") and os.path.exists(result["image_path"])):
            ok, result["error"] = False, "the worker reported an image that does not exist"
        record.update(
            status=(Status.COMPLETED if ok else Status.FAILED).value,
            image_path=result.get("image_path") if ok else None,
            error=None if ok else result.get("error"), diagnosis=None if ok else result.get("diagnosis"),
            attempts=result.get("attempts"), model=result.get("model") or record.get("model"),
            mode=result.get("mode"), stage=result.get("stage"),
        )
