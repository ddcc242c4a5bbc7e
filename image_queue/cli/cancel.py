"""`cancel`: stop queued and running tasks of the live run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from image_queue.cli.common import JsonOpt, StateDirOpt, epilog, err, errors_to_exit, json_doc, print_json, print_table
from image_queue.errors import NotFoundError, UsageError

ACTIVE = ("queued", "running")


def cancel_command(
    id_or_key: Annotated[Optional[str], typer.Argument(metavar="ID_OR_KEY", help="A task id or task_key.")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Cancel every queued and running task of the live run.")] = False,
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the run to confirm.")] = 15.0,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
) -> None:
    """Cancel a task (or --all) of the live run."""
    from image_queue.recovery import lock_is_held, recover_if_dead
    from image_queue.store import Store

    with errors_to_exit():
        if bool(id_or_key) == all_tasks:
            raise UsageError("give one ID_OR_KEY or --all")
        store = Store(state_dir)
        store.require()
        state = store.read_queue_state()
        live = bool(state) and state.get("state") == "running" and lock_is_held(store)
        if not live:
            recover_if_dead(store)
            raise NotFoundError(f"no live run in {store.root}; nothing to cancel"
                                + (f" (task {id_or_key!r} is not queued or running)" if id_or_key else ""))
        run_id = state["run_id"]
        if all_tasks:
            targets = [r["task_id"] for r in store.run_tasks(run_id) if r["status"] in ACTIVE]
            store.request_cancel("ALL")
        else:
            record = store.find_task(id_or_key)
            if record.get("run_id") != run_id or record["status"] not in ACTIVE:
                raise NotFoundError(f"task {record['task_id']} ({record['task_key']}) is {record['status']}, "
                                    "not queued or running in the live run; nothing to cancel")
            targets = [record["task_id"]]
            store.request_cancel(record["task_id"])
        deadline = time.monotonic() + wait
        final: dict[str, str] = {}
        keys: dict[str, str] = {}
        while time.monotonic() < deadline:
            records = {t: store.get_task_record(t) or {} for t in targets}
            final = {t: r.get("status", "?") for t, r in records.items()}
            keys = {t: r.get("task_key", "?") for t, r in records.items()}
            if all(s not in ACTIVE for s in final.values()):
                break
            time.sleep(0.1)
        pending = [t for t, s in final.items() if s in ACTIVE]
        if json_out:
            print_json(json_doc("cancel", run_id=run_id, tasks=final, confirmed=not pending))
        elif not final:
            print(f"run {run_id} has no queued or running task left; nothing to cancel")
        else:
            print_table([(t, keys.get(t), s) for t, s in final.items()], ("TASK_ID", "TASK_KEY", "STATUS"))
            if pending:
                err(f"image_queue: the run has not confirmed {len(pending)} cancel(s) yet; they stay requested")
        raise typer.Exit(0 if not pending else 1)


def register(app: typer.Typer) -> None:
    app.command("cancel", epilog=epilog("image_queue cancel post-1042-cover", "image_queue cancel --all"))(
        cancel_command)
