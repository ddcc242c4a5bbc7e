"""One `run`, end to end: lock → recover → admit → persist → supervise → batch_result.json."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from image_queue.admission import Plan, PlanItem, TasksFile, plan_admission, request_for, safe_name
from image_queue.batch import write_batch_result
from image_queue.config import Config, read_api_key
from image_queue.errors import StateError
from image_queue.models import MAX_QUEUE_CAP, MAX_WORKERS_CAP
from image_queue.recovery import recover_dead_run, run_lock
from image_queue.status import Status
from image_queue.store import Store, atomic_write_json, process_start_time
from image_queue.supervisor import Settings, Supervisor, capture_signals


@dataclass
class RunOptions:
    """What the user asked for on the command line (None = not given)."""

    max_workers: int | None = None
    max_queue_size: int | None = None
    task_timeout_seconds: float | None = None
    kill_grace_seconds: float = 5.0
    max_attempts: int | None = None
    output_dir: Path | None = None
    force: bool = False
    provider: str | None = None
    model: str | None = None
    size: str | None = None
    batch_name: str | None = None


@dataclass
class RunOutcome:
    batch_result: dict[str, Any]
    exit_code: int
    plan: Plan
    interrupted: int | None = None
    events: list[str] = field(default_factory=list)


def resolve_limits(tasks_file: TasksFile, opts: RunOptions) -> tuple[int, int, float]:
    """CLI flag > tasks file > default, for the batch-level limits."""
    o = tasks_file.options
    workers = opts.max_workers or o.max_workers or MAX_WORKERS_CAP
    queue = opts.max_queue_size or o.max_queue_size or MAX_QUEUE_CAP
    timeout = opts.task_timeout_seconds or o.task_timeout_seconds or 600.0
    return workers, queue, timeout


def make_plan(store: Store, tasks_file: TasksFile, config: Config, opts: RunOptions) -> Plan:
    workers, queue, _ = resolve_limits(tasks_file, opts)
    overrides = {"provider": opts.provider, "model": opts.model, "size": opts.size, "max_attempts": opts.max_attempts}
    return plan_admission(tasks_file, config=config, capacity=workers + queue, completed=store.completed_by_key,
                          overrides=overrides, force=opts.force)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _record(item: PlanItem, run_id: str, seq: int, now: float) -> dict[str, Any]:
    spec = item.spec
    record: dict[str, Any] = {
        "task_id": f"{run_id}-{seq:05d}",
        "run_id": run_id,
        "seq": seq,
        "task_key": item.key or f"task[{item.index}]",
        "task_name": item.name or item.key or f"task[{item.index}]",
        "status": {"run": "queued", "reuse": "reused", "skip": "skipped", "reject": "rejected"}[item.action],
        "provider": item.provider.name if item.provider else None,
        "provider_kind": item.provider.kind if item.provider else None,
        "model": (spec.model if spec else None) or (item.provider.model if item.provider else None),
        "mode": ("edit" if spec.images else "generation") if spec else None,
        "size": spec.size if spec else None,
        "prompt": spec.prompt if spec else (item.raw.get("prompt") if isinstance(item.raw, dict) else None),
        "created_at": now,
        "started_at": None,
        "finished_at": None if item.action == "run" else now,
        "elapsed_seconds": None,
        "attempts": 0,
        "image_path": None,
        "error": None,
        "diagnosis": None,
        "reason": item.reason,
        "metadata": (spec.metadata if spec else None) or {},
        "reused_from": None,
        "has_dir": item.action == "run",
        "timeout_seconds": spec.task_timeout_seconds if spec else None,
    }
    if item.action == "reuse" and item.reused_from:
        record.update(reused_from=item.reused_from["task_id"], image_path=item.reused_from["image_path"],
                      attempts=0, model=item.reused_from.get("model"))
    if item.action == "reject":
        category = "queue_full" if item.reason and item.reason.startswith("queue_full") else "invalid_task"
        record["error"] = item.reason
        record["diagnosis"] = {"category": category, "retryable": category == "queue_full",
                               "human_reason": "The batch was larger than one run admits; submit the rest again."
                               if category == "queue_full" else "The task is not valid; fix the field named in the error."}
    return record


def _request_fields(item: PlanItem, record: dict[str, Any], opts: RunOptions) -> dict[str, Any]:
    """The provider request as plain data for the worker (which does not import pydantic)."""
    assert item.spec is not None and item.provider is not None
    request = request_for(item.spec, item.provider, task_id=record["task_id"],
                          max_attempts=item.spec.max_attempts or opts.max_attempts or 3)
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name != "task_dir"}
    return {**fields, "task_key": record["task_key"], "images": list(request.images)}


def _image_stems(plan_items: list[tuple[PlanItem, dict[str, Any]]], output_dir: Path) -> dict[str, str]:
    """A unique, filesystem-safe file stem per task to run; never overwrites an existing image."""
    existing = {p.stem for p in output_dir.iterdir()} if output_dir.is_dir() else set()
    stems: dict[str, str] = {}
    for item, record in plan_items:
        base = safe_name(record["task_name"])
        stem, n = base, 2
        while stem in existing:
            stem, n = f"{base}-{n}", n + 1
        existing.add(stem)
        stems[record["task_id"]] = stem
    return stems


def execute_run(store: Store, tasks_file: TasksFile, config: Config, opts: RunOptions, **hooks: Any) -> RunOutcome:
    """Run a batch; an OS error writing the state (disk full, read-only) becomes a StateError.

    If that happens mid-run, running workers are killed and queue_state.json still says "running",
    so the next `run` or `status` recovers the run like any other that died.
    """
    try:
        return _execute_run(store, tasks_file, config, opts, **hooks)
    except OSError as exc:
        raise StateError(f"cannot write to state dir {store.root}: {exc.strerror or exc}"
                         + (f" ({exc.filename})" if exc.filename else "")) from None


def _execute_run(
    store: Store,
    tasks_file: TasksFile,
    config: Config,
    opts: RunOptions,
    *,
    on_event: Callable[..., None] = lambda *a, **k: None,
    on_plan: Callable[[Plan, dict[str, Any]], None] = lambda p, r: None,
) -> RunOutcome:
    store.ensure()
    with run_lock(store), capture_signals() as signals, ExitStack() as cleanup:
        recover_dead_run(store)
        plan = make_plan(store, tasks_file, config, opts)
        for provider in {i.provider.name: i.provider for i in plan.by_action("run") if i.provider}.values():
            read_api_key(provider)  # a missing key stops the run before anything is spent
        workers, queue, timeout = resolve_limits(tasks_file, opts)
        output_dir = (opts.output_dir or store.root / "images").resolve()
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"output dir {output_dir} is not writable: {exc.strerror}") from None
        run_id, now = new_run_id(), time.time()
        kinds = tuple(sorted({i.provider.kind for i in plan.by_action("run") if i.provider}))
        sup = Supervisor(store=store, run_id=run_id, queue=[],
                         settings=Settings(max_workers=workers, task_timeout_seconds=timeout,
                                           kill_grace_seconds=opts.kill_grace_seconds,
                                           max_attempts=opts.max_attempts or 3, output_dir=output_dir,
                                           preload=kinds),
                         on_event=on_event, signals=signals)
        sup.prespawn(min(workers, len(plan.by_action("run"))))  # they import while the run is written down
        cleanup.callback(sup.release)
        settings = {"max_workers": workers, "max_queue_size": queue, "capacity": workers + queue,
                    "task_timeout_seconds": timeout, "kill_grace_seconds": opts.kill_grace_seconds,
                    "max_attempts": opts.max_attempts or 3, "force": opts.force, "output_dir": str(output_dir),
                    "provider": opts.provider or config.default_provider, "config": config.source}
        run = {"run_id": run_id, "batch_name": opts.batch_name or tasks_file.options.batch_name or
               Path(tasks_file.source).stem, "started_at": now, "pid": os.getpid(), "source": tasks_file.source,
               "settings": settings}
        records = [_record(item, run_id, seq, now) for seq, item in enumerate(plan.items)]
        state = QueueState(store, run, records)
        state.write(queued=len(plan.by_action("run")))  # first, so a crash from here on is recoverable
        to_run = [(item, rec) for item, rec in zip(plan.items, records) if item.action == "run"]
        stems = _image_stems(to_run, output_dir)
        run_dir = store.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "batch_request.json", {**run, "defaults": tasks_file.defaults,
                                                            "tasks": tasks_file.tasks})
        store.save_run(run_id, pid=os.getpid(), started_at=now, batch_name=run["batch_name"])
        store.index_tasks(records)
        queue_records = []
        for item, record in to_run:
            task_dir = store.task_dir(record["task_id"])
            task_dir.mkdir(parents=True, exist_ok=True)
            assert item.spec is not None and item.provider is not None
            atomic_write_json(task_dir / "task.json", record)
            record["job"] = {
                "task_id": record["task_id"], "task_dir": str(task_dir.resolve()), "attempt": 1,
                "request": _request_fields(item, record, opts), "metadata": item.spec.metadata,
                "provider": item.provider.model_dump(mode="json"), "image_stem": stems[record["task_id"]],
                "output_dir": str(output_dir), "state_dir": str(store.root.resolve()),
                "max_attempts": item.spec.max_attempts or opts.max_attempts or 3,
            }
            queue_records.append(record)
        on_plan(plan, run)
        sup.queue = queue_records
        sup.on_change = state.update
        state.update(sup)
        interrupted = sup.run()
        finished = time.time()
        outcome = "interrupted" if interrupted else "finished"
        doc = write_batch_result(store, run, records, finished_at=finished, outcome=outcome)
        state.close(finished, outcome, doc["summary"])
    exit_code = 128 + interrupted if interrupted else (0 if doc["summary"]["ok"] else 1)
    if not interrupted and plan.items and all(i.action == "reject" and i.spec is None for i in plan.items):
        exit_code = 2  # every task was invalid: the tasks file is unusable
    return RunOutcome(batch_result=doc, exit_code=exit_code, plan=plan, interrupted=interrupted)


class QueueState:
    """queue_state.json: the live view `status` reads from another terminal."""

    def __init__(self, store: Store, run: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.store, self.run, self.records = store, run, records
        self.base = {"run_id": run["run_id"], "batch_name": run["batch_name"], "pid": os.getpid(),
                     "pid_start_time": process_start_time(os.getpid()), "started_at": run["started_at"],
                     "state_dir": str(store.root.resolve()), "settings": run["settings"]}

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts

    def update(self, sup: Supervisor) -> None:
        running = [{"task_id": a.record["task_id"], "task_key": a.record["task_key"],
                    "worker_id": a.record["worker"]["worker_id"], "pid": a.proc.pid,
                    "started_at": a.record["started_at"], "binding": {"token": a.token}}
                   for a in sup.running()]
        self.write(running=running, queued=len(sup.queue))

    def write(self, *, running: list[dict[str, Any]] | None = None, queued: int = 0) -> None:
        self.store.write_queue_state({**self.base, "state": "running", "finished_at": None,
                                      "counts": self._counts(), "running": running or [], "queued": queued})

    def close(self, finished: float, outcome: str, summary: dict[str, Any]) -> None:
        self.store.write_queue_state({**self.base, "state": outcome, "finished_at": finished,
                                      "counts": self._counts(), "running": [], "queued": 0, "summary": summary})


def dry_run(store: Store, tasks_file: TasksFile, config: Config, opts: RunOptions) -> Plan:
    """The admission plan without running anything, writing anything or contacting anyone."""
    return make_plan(store, tasks_file, config, opts)


__all__ = ["RunOptions", "RunOutcome", "execute_run", "dry_run", "Status"]
