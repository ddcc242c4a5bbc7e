"""The end-of-run summary on stdout: a rich table on a terminal, plain lines anywhere else."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from image_queue.status import ALL_STATUSES

OK = ("completed", "reused")
MAX_PROBLEM_ROWS = 50


def _why(row: dict[str, Any]) -> str:
    human = (row.get("diagnosis") or {}).get("human_reason") or ""
    return " — ".join(p for p in (row.get("error") or "", human) if p)


def _grouped(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(keys, status, why) with tasks that ended the same way for the same reason on one line."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row["status"], " ".join(_why(row).split())), []).append(str(row["task_key"]))
    out = []
    for (status, why), keys in groups.items():
        label = ", ".join(keys[:3]) + (f" +{len(keys) - 3} more" if len(keys) > 3 else "")
        out.append((label, status, why))
    return out


def _facts(doc: dict[str, Any]) -> tuple[str, list[tuple[str, int]], list[tuple[str, str, str]], list[tuple[str, str]]]:
    s = doc["summary"]
    verdict = "all ok" if s["ok"] else "NOT ok"
    title = (f"run {doc['run_id']} ({doc.get('batch_name') or '-'}) {doc.get('outcome', 'finished')} "
             f"in {doc['elapsed_seconds']:.1f}s: {s['total']} tasks, {verdict}")
    counts = [(k, s[k]) for k in ALL_STATUSES if s.get(k)]
    problems = _grouped([r for r in doc["tasks"] if r["status"] not in OK])
    paths = [("images", str(doc.get("output_dir") or "-")),
             ("result", str(Path(doc["state_dir"]) / "runs" / doc["run_id"] / "batch_result.json")),
             ("gallery", f"image_queue report {doc['run_id']}")]
    return title, counts, problems, paths


def render_summary(doc: dict[str, Any]) -> None:
    if sys.stdout.isatty():
        _render_rich(doc)
    else:
        _render_plain(doc)


def _render_plain(doc: dict[str, Any]) -> None:
    title, counts, problems, paths = _facts(doc)
    print(title)
    print("  " + ", ".join(f"{k} {n}" for k, n in counts))
    for keys, status, why in problems[:MAX_PROBLEM_ROWS]:
        print(f"  {status:<18} {keys}: {why}".rstrip(": "))
    if len(problems) > MAX_PROBLEM_ROWS:
        print(f"  … and {len(problems) - MAX_PROBLEM_ROWS} more: image_queue list --run {doc['run_id']}")
    for name, value in paths:
        print(f"{name}: {value}")


def _render_rich(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    title, counts, problems, paths = _facts(doc)
    console.print(Text(title, "bold green" if doc["summary"]["ok"] else "bold red"))
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("STATUS")
    table.add_column("TASKS", justify="right")
    for status, n in counts:
        table.add_row(Text(status, "green" if status in OK else "red"), str(n))
    console.print(table)
    if problems:
        issues = Table(show_header=True, header_style="bold", title="not ok", title_justify="left", expand=False)
        issues.add_column("TASK_KEY", max_width=36)
        issues.add_column("STATUS", no_wrap=True)
        issues.add_column("WHY")
        for keys, status, why in problems[:MAX_PROBLEM_ROWS]:
            issues.add_row(Text(keys), Text(status, "red"), Text(why))
        console.print(issues)
        if len(problems) > MAX_PROBLEM_ROWS:
            console.print(f"… and {len(problems) - MAX_PROBLEM_ROWS} more: image_queue list --run {doc['run_id']}",
                          markup=False)
    for name, value in paths:
        console.print(Text.assemble((f"{name}: ", "dim"), value))
