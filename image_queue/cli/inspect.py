"""`status`, `list`, `get`, `history`: read the state dir, live or after the fact, without blocking a run.

These import only the store (sqlite3 + orjson), never httpx, pydantic or rich, so they start fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from image_queue.cli.common import (JsonOpt, StateDirOpt, did_you_mean, epilog, errors_to_exit, json_doc,
                                    print_json, print_table)
from image_queue.errors import UsageError
from image_queue.status import ALL_STATUSES

ROW_KEYS = ("task_id", "run_id", "task_key", "task_name", "status", "provider", "model", "mode", "created_at",
            "started_at", "finished_at", "elapsed_seconds", "attempts", "image_path", "error", "reason", "reused_from")


def _store(state_dir: Path) -> Any:
    from image_queue.store import Store

    return Store(state_dir)  # a missing state dir reads as empty: no runs yet


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ROW_KEYS}


def render_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no tasks")
        return
    print_table([(r["task_id"], r["task_key"], r["status"], r["provider"], r["elapsed_seconds"],
                  r["image_path"] or r["error"] or r["reason"]) for r in rows],
                ("TASK_ID", "TASK_KEY", "STATUS", "PROVIDER", "SECS", "IMAGE / ERROR"), max_widths=(30, 32, 18, 16, 8))


def status_command(json_out: JsonOpt = False, state_dir: StateDirOpt = Path("state")) -> None:
    """Show the current or last run and its workers."""
    from image_queue.recovery import lock_is_held, recover_if_dead

    with errors_to_exit():
        store = _store(state_dir)
        state = store.read_queue_state()
        if state and state.get("state") == "running" and not lock_is_held(store):
            recover_if_dead(store)
            state = store.read_queue_state()
        alive = bool(state) and state.get("state") == "running" and lock_is_held(store)
        now = time.time()
        running = [{**r, "elapsed_seconds": round(now - r["started_at"], 1)} for r in (state or {}).get("running", [])]
        if json_out:
            print_json(json_doc("status", alive=alive, run=state and {**state, "running": running}))
            return
        if not state:
            print(f"no runs yet in {store.root}")
            return
        print(f"run       {state['run_id']}  ({state.get('batch_name') or '-'})")
        print(f"state     {state['state']}{' (alive)' if alive else ''}   pid {state['pid']}")
        print(f"started   {_when(state.get('started_at'))}   finished {_when(state.get('finished_at'))}")
        counts = state.get("counts") or {}
        print("counts    " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "-"))
        if state.get("queued"):
            print(f"queued    {state['queued']}")
        if running:
            print()
            print_table([(r.get("worker_id"), r["task_key"], r["pid"], f"{r['elapsed_seconds']:.1f}s", r["task_id"])
                         for r in running], ("WORKER", "TASK_KEY", "PID", "ELAPSED", "TASK_ID"))


def list_command(
    status: Annotated[Optional[str], typer.Option(help=f"Only this status: {', '.join(ALL_STATUSES)}.")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run id ('last' for the latest run).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="At most this many rows (0 = all).")] = 200,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
) -> None:
    """List task rows, newest first."""
    with errors_to_exit():
        if status and status not in ALL_STATUSES:
            raise UsageError(f"unknown status {status!r}{did_you_mean(status, ALL_STATUSES)} "
                             f"(valid: {', '.join(ALL_STATUSES)})")
        store = _store(state_dir)
        run_id = store.last_run_id() if run == "last" else run
        rows = [_row(r) for r in store.list_tasks(status=status, run_id=run_id, limit=limit or None)]
        if json_out:
            print_json(json_doc("list", count=len(rows), tasks=rows))
        else:
            render_rows(rows)


def _tail(path: Path, n: int) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def get_command(
    id_or_key: Annotated[str, typer.Argument(metavar="ID_OR_KEY", help="A task id, or a task_key (its newest task).")],
    tail_bytes: Annotated[int, typer.Option(min=0, help="How much of stdout/stderr to show.")] = 2000,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
) -> None:
    """Show one task: record, result, files, output."""
    from image_queue.store import read_json

    with errors_to_exit():
        store = _store(state_dir)
        record = store.find_task(id_or_key)
        task_dir = store.task_dir(record["task_id"])
        has_dir = task_dir.is_dir()
        result = read_json(task_dir / "result.json") if has_dir else None
        paths = {name: str(task_dir / name) for name in ("task.json", "command.json", "stdout.txt", "stderr.txt",
                                                        "result.json", "attempts.jsonl", "late_result.json")
                 if has_dir and (task_dir / name).exists()}
        doc = json_doc("task", task=record, result=result, paths=paths,
                       stdout_tail=_tail(task_dir / "stdout.txt", tail_bytes) if has_dir else None,
                       stderr_tail=_tail(task_dir / "stderr.txt", tail_bytes) if has_dir else None)
        if json_out:
            print_json(doc)
            return
        for key in ("task_id", "run_id", "task_key", "task_name", "status", "provider", "model", "mode", "size",
                    "attempts", "elapsed_seconds", "image_path", "reused_from", "error"):
            if record.get(key) not in (None, ""):
                print(f"{key:<16}{record[key]}")
        print(f"{'started':<16}{_when(record.get('started_at'))}   finished {_when(record.get('finished_at'))}")
        if record.get("diagnosis"):
            print(f"{'why':<16}{record['diagnosis'].get('human_reason')}")
        if record.get("late_output"):
            print(f"{'late output':<16}{record['late_output']['path']} (not trusted)")
        if record.get("prompt"):
            print(f"{'prompt':<16}{record['prompt'][:500]}")
        for name, path in paths.items():
            print(f"{name:<16}{path}")
        for name in ("stdout", "stderr"):
            text = doc[f"{name}_tail"]
            if text:
                print(f"--- {name} (last {tail_bytes} bytes) ---\n{text.rstrip()}")


def history_command(
    n: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many rows.")] = 50,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
) -> None:
    """List the last n finished tasks across runs."""
    with errors_to_exit():
        store = _store(state_dir)
        rows = [_row(r) for r in store.history(n)]
        if json_out:
            print_json(json_doc("history", count=len(rows), tasks=rows))
        else:
            render_rows(rows)


def register(app: typer.Typer) -> None:
    app.command("status", epilog=epilog(
        "image_queue status", "image_queue status --json",
        note="Run id, supervisor pid, whether it is alive, counts by status, and each running task "
             "(task_key, worker pid, elapsed). Works from another terminal while a run is going."))(status_command)
    app.command("list", epilog=epilog("image_queue list --status failed", "image_queue list --run last -n 0 --json"))(
        list_command)
    app.command("get", epilog=epilog(
        "image_queue get post-1042-cover", "image_queue get post-1042-cover --json",
        note="Metadata, result.json, artifact paths and the tails of the worker's stdout/stderr."))(get_command)
    app.command("history", epilog=epilog("image_queue history -n 20"))(history_command)
