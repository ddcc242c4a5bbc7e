"""`image_queue run`: admit, run, persist, summarize."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from image_queue.cli.common import ConfigOpt, StateDirOpt, epilog, errors_to_exit, print_json
from image_queue.cli.plan import (ForceOpt, MaxAttemptsOpt, MaxQueueOpt, MaxWorkersOpt, ModelOpt, ProviderOpt,
                                  SizeOpt, TasksArg, read_tasks, show_plan)


def run_command(
    tasks: TasksArg = None,
    prompt: Annotated[Optional[str], typer.Option(help="Run a single task with this prompt.")] = None,
    task_key: Annotated[Optional[str], typer.Option(help="Idempotency key of the single task.")] = None,
    task_name: Annotated[Optional[str], typer.Option(help="Name of the single task (used in file names).")] = None,
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    size: SizeOpt = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Where images go (default: STATE_DIR/images).")] = None,
    max_workers: MaxWorkersOpt = None,
    max_queue_size: MaxQueueOpt = None,
    task_timeout_seconds: Annotated[Optional[float], typer.Option(min=0.1, help="Per-task time limit (default 600).")] = None,
    kill_grace_seconds: Annotated[float, typer.Option(min=0, max=120, help="Between SIGTERM and SIGKILL on timeout/cancel.")] = 5.0,
    max_attempts: MaxAttemptsOpt = None,
    force: ForceOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the admission plan (like validate); run and write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress; print only the summary.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print only batch_result.json on stdout.")] = False,
    state_dir: StateDirOpt = Path("state"),
    config: ConfigOpt = None,
) -> None:
    """Run a batch of image tasks; print a summary."""
    from image_queue.cli.progress import make_reporter
    from image_queue.cli.summary import render_summary
    from image_queue.config import load_config
    from image_queue.runner import RunOptions, execute_run
    from image_queue.store import Store

    with errors_to_exit():
        tasks_file = read_tasks(tasks, prompt, task_key, task_name)
        cfg = load_config(config)
        opts = RunOptions(max_workers=max_workers, max_queue_size=max_queue_size,
                          task_timeout_seconds=task_timeout_seconds, kill_grace_seconds=kill_grace_seconds,
                          max_attempts=max_attempts, output_dir=output_dir, force=force, provider=provider,
                          model=model, size=size)
        store = Store(state_dir)
        if dry_run:
            raise typer.Exit(show_plan(store, tasks_file, cfg, opts, json_out=json_out))
        reporter = make_reporter(quiet=quiet, json_out=json_out, store=store)
        try:
            outcome = execute_run(store, tasks_file, cfg, opts, on_event=reporter.on_event, on_plan=reporter.on_plan)
        finally:
            reporter.close()
        if json_out:
            print_json(outcome.batch_result)
        else:
            render_summary(outcome.batch_result)
    # Everything is durable by now (fsynced files, committed index rows). Skip interpreter teardown,
    # ~75 ms of unloading typer, pydantic and httpx, so a pipeline gets the exit status at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(outcome.exit_code)


RUN_EPILOG = epilog(
    "image_queue run @examples/covers.json --max-workers 4",
    "image_queue run --prompt 'a lighthouse at dawn' --task-key lighthouse --provider openai",
    "cat tasks.jsonl | image_queue run @- --json > batch_result.json",
    note="Progress: on a terminal, a live display (one line per worker slot, totals, throughput, ETA); "
         "otherwise one timestamped line per event on stderr (started, finished, retry, timeout, cancelled). "
         "Exit status: 0 all ok, 1 something not ok, 2 bad usage, 3 state dir busy, 130/143 interrupted.")


def register(app: typer.Typer) -> None:
    app.command("run", epilog=RUN_EPILOG)(run_command)
