"""`validate` (and `run --dry-run`): the admission plan of a tasks file, without running anything.

The options that shape a plan are declared once here and shared with `run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from image_queue.cli.common import (ConfigOpt, JsonOpt, StateDirOpt, epilog, err, errors_to_exit, json_doc,
                                    print_json, print_table)
from image_queue.errors import UsageError

TasksArg = Annotated[Optional[str], typer.Argument(metavar="TASKS", help="@tasks.json, @tasks.jsonl, or @- for stdin.")]
ProviderOpt = Annotated[Optional[str], typer.Option(
    help="Provider name from image_queue.toml or a preset (mock, openai, openai-responses, image2, runapi).")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model, overriding the tasks file and config.")]
SizeOpt = Annotated[Optional[str], typer.Option(help="WxH, W:H or auto, overriding the tasks file.")]
MaxWorkersOpt = Annotated[Optional[int], typer.Option(min=1, max=4, help="Workers at once, 1–4 (default 4).")]
MaxQueueOpt = Annotated[Optional[int], typer.Option(
    min=1, max=100, help="Queued tasks beyond the workers, 1–100 (default 100).")]
MaxAttemptsOpt = Annotated[Optional[int], typer.Option(min=1, max=5, help="HTTP attempts per image, 1–5 (default 3).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run task_keys that already completed.")]

ACTIONS = ("run", "reuse", "skip", "reject")


def read_tasks(tasks: str | None, prompt: str | None = None, task_key: str | None = None,
               task_name: str | None = None) -> Any:
    """A TasksFile from `@file` / `@-`, or a single task from --prompt."""
    from image_queue.admission import TasksFile, load_tasks
    from image_queue.models import BatchOptions

    if tasks and prompt:
        raise UsageError("give either a tasks file (@tasks.json) or --prompt, not both")
    if prompt is not None:
        single = {"prompt": prompt, **({"task_key": task_key} if task_key else {}),
                  **({"task_name": task_name} if task_name else {})}
        return TasksFile(tasks=[single], options=BatchOptions(), defaults={}, source="--prompt")
    if not tasks:
        raise UsageError("nothing to do: give @tasks.json, @- (stdin) or --prompt TEXT (see --help)")
    if task_key or task_name:
        raise UsageError("--task-key/--task-name go with --prompt; put keys in the tasks file instead")
    return load_tasks(tasks)


def missing_keys(plan: Any) -> list[dict[str, Any]]:
    """Providers the plan would call whose API key is not available (the run would stop on them)."""
    from image_queue.config import read_api_key
    from image_queue.errors import ConfigError

    missing = []
    for provider in {i.provider.name: i.provider for i in plan.by_action("run") if i.provider}.values():
        try:
            read_api_key(provider)
        except ConfigError as exc:
            missing.append({"provider": provider.name, "api_key_env": provider.api_key_env, "error": str(exc)})
    return missing


def plan_exit_code(plan: Any) -> int:
    """What `run` would exit with, as far as admission can tell: 0 all admitted, 1 some not, 2 none."""
    counts = {a: len(plan.by_action(a)) for a in ACTIONS}
    if not counts["run"] and not counts["reuse"]:
        return 2
    return 1 if counts["skip"] or counts["reject"] else 0


def plan_doc(plan: Any, source: str, missing: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {a: len(plan.by_action(a)) for a in ACTIONS}
    rows = []
    for i in plan.items:
        spec = i.spec
        rows.append({
            "index": i.index, "task_key": i.key, "task_name": i.name, "action": i.action, "reason": i.reason,
            "provider": i.provider.name if i.provider else None,
            "model": ((spec.model if spec else None) or (i.provider.model if i.provider else None)),
            "mode": ("edit" if spec.images else "generation") if spec else None,
            "size": spec.size if spec else None,
            "reused_from": (i.reused_from or {}).get("task_id"),
        })
    return json_doc("plan", dry_run=True, source=source, capacity=plan.capacity,
                    summary={"total": len(plan.items), **counts, "ok": plan_exit_code(plan) == 0},
                    missing_keys=missing, plan=rows)


def render_plan(doc: dict[str, Any]) -> None:
    print_table([(r["index"], r["action"], r["task_key"] or f"task[{r['index']}]", r["provider"], r["model"],
                  r["size"], r["reason"]) for r in doc["plan"]],
                ("#", "ACTION", "TASK_KEY", "PROVIDER", "MODEL", "SIZE", "REASON"), max_widths=(5, 6, 36, 16, 20, 12))
    s = doc["summary"]
    print(f"plan: {s['run']} to run, {s['reuse']} reused, {s['skip']} skipped, {s['reject']} rejected "
          f"of {s['total']}; capacity {doc['capacity']} per run")


def show_plan(store: Any, tasks_file: Any, config: Any, opts: Any, *, json_out: bool) -> int:
    """Print the plan (table or --json) and return the exit code `run` would have."""
    from image_queue.runner import dry_run

    plan = dry_run(store, tasks_file, config, opts)
    doc = plan_doc(plan, tasks_file.source, missing_keys(plan))
    if json_out:
        print_json(doc)
    else:
        render_plan(doc)
    for m in doc["missing_keys"]:
        err(f"image_queue: warning: {m['error']} (a run would stop before spending anything)")
    return plan_exit_code(plan)


def validate_command(
    tasks: TasksArg = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    size: SizeOpt = None,
    max_workers: MaxWorkersOpt = None,
    max_queue_size: MaxQueueOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
    config: ConfigOpt = None,
) -> None:
    """Show what a run would do, without running it."""
    from image_queue.config import load_config
    from image_queue.runner import RunOptions
    from image_queue.store import Store

    with errors_to_exit():
        tasks_file = read_tasks(tasks)
        opts = RunOptions(max_workers=max_workers, max_queue_size=max_queue_size, max_attempts=max_attempts,
                          force=force, provider=provider, model=model, size=size)
        code = show_plan(Store(state_dir), tasks_file, load_config(config), opts, json_out=json_out)
    raise typer.Exit(code)


VALIDATE_EPILOG = epilog(
    "image_queue validate @examples/covers.json",
    "image_queue validate @tasks.json --provider openai --json",
    note="Same as run --dry-run. Exit status (what run would exit with): 0 every task would run or be reused, "
         "1 some would be skipped or rejected, 2 none would run or the file is unusable.")


def register(app: typer.Typer) -> None:
    app.command("validate", epilog=VALIDATE_EPILOG)(validate_command)
