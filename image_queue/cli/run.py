"""`image_queue run`: admit, run, persist, summarize."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from image_queue.cli.common import ConfigOpt, JsonOpt, StateDirOpt, err, errors_to_exit, print_json
from image_queue.errors import UsageError


def _event_line(kind: str, record: dict[str, Any], **extra: Any) -> str:
    ts = time.strftime("%H:%M:%S")
    key = record.get("task_key")
    if kind == "started":
        return f"{ts} started   {key}  (task {record['task_id']}, pid {record.get('pid')})"
    if kind == "finished":
        detail = record.get("image_path") or record.get("error") or ""
        return f"{ts} finished  {key}  {record['status']} in {record.get('elapsed_seconds') or 0:.1f}s  {detail}"
    if kind == "timeout":
        return f"{ts} timeout   {key}  terminating its worker"
    return f"{ts} {kind:<9} {key}  {record.get('error') or ''}"


def render_plan(plan: Any) -> None:
    verbs = {"run": "run", "reuse": "reuse", "skip": "skip", "reject": "reject"}
    counts: dict[str, int] = {}
    for item in plan.items:
        counts[item.action] = counts.get(item.action, 0) + 1
        label = item.key or f"task[{item.index}]"
        reason = f"  ({item.reason})" if item.reason else ""
        print(f"{verbs[item.action]:<7} {label}{reason}")
    print("plan: " + ", ".join(f"{n} {a}" for a, n in counts.items()) + f"; capacity {plan.capacity} per run")


def render_summary(doc: dict[str, Any]) -> None:
    s = doc["summary"]
    counts = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("ok", "total") and v)
    print(f"run {doc['run_id']} {doc['outcome']} in {doc['elapsed_seconds']:.1f}s: {s['total']} tasks — {counts}")
    for row in doc["tasks"]:
        if row["status"] not in ("completed", "reused"):
            human = (row.get("diagnosis") or {}).get("human_reason") or ""
            print(f"  {row['status']:<18} {row['task_key']}: {row.get('error') or ''} {human}".rstrip())
    print(f"images: {doc.get('output_dir')}")
    print(f"result: {Path(doc['state_dir']) / 'runs' / doc['run_id'] / 'batch_result.json'}")


def run_command(
    tasks: Annotated[Optional[str], typer.Argument(help="@tasks.json, @tasks.jsonl, or @- for stdin.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Run a single task with this prompt.")] = None,
    task_key: Annotated[Optional[str], typer.Option(help="Idempotency key of the single task.")] = None,
    task_name: Annotated[Optional[str], typer.Option(help="Name of the single task (used in file names).")] = None,
    provider: Annotated[Optional[str], typer.Option(help="Provider name from image_queue.toml or a preset (mock, openai, openai-responses, image2, runapi).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model, overriding the tasks file and config.")] = None,
    size: Annotated[Optional[str], typer.Option(help="WxH, W:H or auto, overriding the tasks file.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Where images go (default: STATE_DIR/images).")] = None,
    max_workers: Annotated[Optional[int], typer.Option(min=1, max=4, help="Workers at once, 1–4 (default 4).")] = None,
    max_queue_size: Annotated[Optional[int], typer.Option(min=1, max=100, help="Queued tasks beyond the workers, 1–100 (default 100).")] = None,
    task_timeout_seconds: Annotated[Optional[float], typer.Option(min=0.1, help="Per-task time limit (default 600).")] = None,
    kill_grace_seconds: Annotated[float, typer.Option(min=0, max=120, help="Between SIGTERM and SIGKILL on timeout/cancel.")] = 5.0,
    max_attempts: Annotated[Optional[int], typer.Option(min=1, max=5, help="HTTP attempts per image, 1–5 (default 3).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run task_keys that already completed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the admission plan; run and write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
    config: ConfigOpt = None,
) -> None:
    """Run a batch of image tasks: image_queue run @tasks.json (or --prompt P --task-key K)."""
    from image_queue.admission import TasksFile, load_tasks
    from image_queue.config import load_config
    from image_queue.models import BatchOptions
    from image_queue.runner import RunOptions, dry_run as plan_only, execute_run
    from image_queue.store import Store

    with errors_to_exit():
        if tasks and prompt:
            raise UsageError("give either a tasks file (@tasks.json) or --prompt, not both")
        if prompt is not None:
            single = {"prompt": prompt, **({"task_key": task_key} if task_key else {}),
                      **({"task_name": task_name} if task_name else {})}
            tasks_file = TasksFile(tasks=[single], options=BatchOptions(), defaults={}, source="--prompt")
        elif tasks:
            if task_key or task_name:
                raise UsageError("--task-key/--task-name go with --prompt; put keys in the tasks file instead")
            tasks_file = load_tasks(tasks)
        else:
            raise UsageError("nothing to run: give @tasks.json, @- (stdin) or --prompt TEXT (see --help)")
        cfg = load_config(config)
        opts = RunOptions(max_workers=max_workers, max_queue_size=max_queue_size,
                          task_timeout_seconds=task_timeout_seconds, kill_grace_seconds=kill_grace_seconds,
                          max_attempts=max_attempts, output_dir=output_dir, force=force, provider=provider,
                          model=model, size=size)
        store = Store(state_dir)
        if dry_run:
            plan = plan_only(store, tasks_file, cfg, opts)
            if json_out:
                print_json({"schema_version": 1, "dry_run": True, "capacity": plan.capacity, "plan": [
                    {"index": i.index, "task_key": i.key, "action": i.action, "reason": i.reason,
                     "provider": i.provider.name if i.provider else None} for i in plan.items]})
            else:
                render_plan(plan)
            raise typer.Exit(0 if plan.by_action("run") or plan.by_action("reuse") else 2)

        def on_event(kind: str, record: dict[str, Any], **extra: Any) -> None:
            if not quiet and not json_out:
                err(_event_line(kind, record, **extra))

        def on_plan(plan: Any, run: dict[str, Any]) -> None:
            if quiet or json_out:
                return
            n = {a: len(plan.by_action(a)) for a in ("run", "reuse", "skip", "reject")}
            err(f"run {run['run_id']}: {n['run']} to run, {n['reuse']} reused, {n['skip']} skipped, "
                f"{n['reject']} rejected (capacity {plan.capacity}); state {store.root}")
            for item in plan.items:
                if item.action == "reject":
                    err(f"rejected  {item.key or f'task[{item.index}]'}: {item.reason}")

        outcome = execute_run(store, tasks_file, cfg, opts, on_event=on_event, on_plan=on_plan)
        if json_out:
            print_json(outcome.batch_result)
        else:
            render_summary(outcome.batch_result)
        sys.stdout.flush()
    raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    app.command("run", epilog="Example: image_queue run @examples/covers.json --max-workers 4")(run_command)
