"""`report`: write the HTML gallery of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from image_queue.cli.common import JsonOpt, StateDirOpt, epilog, errors_to_exit, json_doc, print_json


def report_command(
    run_id: Annotated[Optional[str], typer.Argument(metavar="RUN_ID", help="A run id (default: the last run).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", metavar="FILE", help="Where to write the page: a file, "
                                               "or a directory for report.html in it "
                                               "(default: STATE_DIR/runs/RUN_ID/report.html).")] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = Path("state"),
) -> None:
    """Write an HTML gallery of a run."""
    from image_queue.report import write_report
    from image_queue.store import Store

    with errors_to_exit():
        store = Store(state_dir)
        store.require()
        info = write_report(store, run_id, out)
        if json_out:
            print_json(json_doc("report", run_id=info.run_id, path=str(info.path), url=info.path.as_uri(),
                                tasks=info.tasks, images=info.images, missing_images=info.missing_images))
            return
        print(f"report of run {info.run_id}: {info.tasks} tasks, {info.images} images"
              + (f", {info.missing_images} image files missing" if info.missing_images else ""))
        print(info.path.as_uri())


REPORT_EPILOG = epilog(
    "image_queue report",
    "image_queue report 20250101-120000-ab12cd --out state/covers.html --json",
    note="One self-contained file (no network). Images are linked relative to the page, so it opens offline "
         "from the file system; keep it where it was written (or --out inside the state dir).")


def register(app: typer.Typer) -> None:
    app.command("report", epilog=REPORT_EPILOG)(report_command)
