"""One live run per state dir, and cleaning up after a supervisor that died.

The run lock is an flock on `<state>/run.lock`, held by the supervisor for the whole run: the
kernel drops it when the process dies however it dies, so a held lock means a live run and a free
lock with queue_state.json saying "running" means a dead one. `recover_dead_run` then kills what is
left of that run's workers, adopts results that are complete and bound to their attempt (no second
payment), marks the rest `orphaned` (was running) or `cancelled` (never started), writes the dead
run's batch_result.json and marks queue_state.json "crashed".
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

from image_queue.batch import iso, write_batch_result
from image_queue.errors import RunLockedError, StateError
from image_queue.outcome import is_bound, read_result
from image_queue.status import Status
from image_queue.store import Store, pid_alive, read_json


@contextmanager
def run_lock(store: Store, *, blocking: bool = False) -> Iterator[None]:
    """Hold the state dir's run lock; RunLockedError naming the live run's pid and start time."""
    try:
        fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StateError(f"cannot open {store.lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            state = _quiet_read(store) or {}
            raise RunLockedError(
                f"another image_queue run is using {store.root}: run {state.get('run_id', '?')}, "
                f"pid {state.get('pid', '?')}, started {iso(state.get('started_at')) or '?'}. "
                "Wait for it, cancel it (`image_queue cancel --all`), or use another --state-dir.",
                pid=state.get("pid"),
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_is_held(store: Store) -> bool:
    """True if a live run holds the lock. Never blocks and never takes the lock."""
    try:
        fd = os.open(store.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _quiet_read(store: Store) -> dict[str, Any] | None:
    try:
        return store.read_queue_state()
    except StateError:
        return None


def _kill_leftover_worker(record: dict[str, Any]) -> None:
    worker = record.get("worker") or {}
    pid = worker.get("pid")
    if pid and pid_alive(pid, worker.get("pid_start_time")):
        try:
            os.killpg(worker.get("pgid", pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def adoptable_result(store: Store, record: dict[str, Any]) -> dict[str, Any] | None:
    """The task's result.json if it is ok, bound to the recorded attempt, and its image exists."""
    result = read_result(store, record["task_id"])
    worker = record.get("worker") or {}
    if not is_bound(result, token=worker.get("token"), worker_pid=worker.get("pid")):
        return None
    assert result is not None
    if result.get("ok") is not True or result.get("status") != "completed":
        return None
    path = result.get("image_path")
    if not path or not os.path.exists(path) or (result.get("bytes") and os.path.getsize(path) != result["bytes"]):
        return None
    return result


def _settle_dead(store: Store, record: dict[str, Any], dead_pid: Any, now: float) -> None:
    if record["status"] == Status.RUNNING.value:
        _kill_leftover_worker(record)
        result = adoptable_result(store, record)
        if result is not None:
            record.update(status=Status.COMPLETED.value, image_path=result["image_path"],
                          attempts=result.get("attempts"), model=result.get("model"), mode=result.get("mode"),
                          finished_at=result.get("finished_at") or now, error=None, diagnosis=None,
                          recovered="adopted the worker's bound result after its supervisor died")
        else:
            record.update(status=Status.ORPHANED.value, finished_at=now,
                          error=f"its supervisor (pid {dead_pid}) died while it was running",
                          diagnosis={"category": "worker_crash", "retryable": True,
                                     "human_reason": "The run was stopped abruptly while this image was "
                                                     "being made; run the batch again to retry it."})
    else:
        record.update(status=Status.CANCELLED.value, finished_at=now,
                      error=f"its supervisor (pid {dead_pid}) died before it started",
                      diagnosis={"category": "cancelled", "retryable": True,
                                 "human_reason": "The run was stopped before this image was started."})
    if record.get("started_at"):
        record["elapsed_seconds"] = round(record["finished_at"] - record["started_at"], 3)


def recover_dead_run(store: Store) -> dict[str, Any] | None:
    """Settle every task a dead supervisor left queued or running. Caller holds the run lock.

    Holding the lock proves no supervisor is alive, so any active task in the index is dead, even
    one whose run died before queue_state.json named it.
    """
    state = _quiet_read(store) or {}
    active = store.active_tasks()
    if not active and state.get("state") != "running":
        return None
    now = time.time()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record in active:
        by_run.setdefault(record["run_id"], []).append(record)
    if state.get("state") == "running":
        by_run.setdefault(state["run_id"], [])
    docs = []
    for run_id, changed in by_run.items():
        dead_pid = state.get("pid") if state.get("run_id") == run_id else "unknown"
        for record in changed:
            _settle_dead(store, record, dead_pid, now)
            if record.get("has_dir"):
                # the run may have died between indexing its tasks and creating their directories
                store.task_dir(record["task_id"]).mkdir(parents=True, exist_ok=True)
                store.save_task(record)
        store.index_tasks(changed)
        run = read_json(store.run_dir(run_id) / "batch_request.json") or {
            "run_id": run_id, "started_at": state.get("started_at") or now}
        docs.append(write_batch_result(store, run, store.run_tasks(run_id), finished_at=now, outcome="crashed"))
    if state.get("state") == "running":
        store.write_queue_state({**state, "state": "crashed", "finished_at": now, "running": [], "queued": 0,
                                 "recovered_by_pid": os.getpid(), "counts": store.counts(state["run_id"])})
    return docs[-1] if docs else None


def recover_if_dead(store: Store) -> dict[str, Any] | None:
    """For inspection commands: recover a dead run if nobody holds the lock; never wait."""
    state = _quiet_read(store)
    if not state or state.get("state") != "running" or lock_is_held(store):
        return None  # only a run that queue_state.json still calls running can be dead
    try:
        with run_lock(store):
            return recover_dead_run(store)
    except (RunLockedError, StateError, OSError):
        return None
