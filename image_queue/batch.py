"""Task records and batch_result.json (CONTRACT.md §7): one shape for normal ends and recoveries."""

from __future__ import annotations

import time
from typing import Any

from image_queue.status import summarize
from image_queue.store import Store, atomic_write_json

ROW_FIELDS = ("task_id", "task_key", "task_name", "status", "image_path", "error", "diagnosis", "attempts",
              "elapsed_seconds", "metadata")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def batch_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in ROW_FIELDS}
    if row["metadata"] is None:
        row["metadata"] = {}
    if record.get("reason") and not row["error"]:
        row["error"] = record["reason"]
    if record.get("reused_from"):
        row["reused_from"] = record["reused_from"]
    if record.get("late_output"):
        row["late_output"] = record["late_output"]
    return row


def write_batch_result(store: Store, run: dict[str, Any], records: list[dict[str, Any]], *,
                       finished_at: float, outcome: str) -> dict[str, Any]:
    """Write runs/<run_id>/batch_result.json and the run's index row; return the document."""
    rows = [batch_row(r) for r in sorted(records, key=lambda r: r["seq"])]
    summary = summarize([r["status"] for r in rows])
    doc = {
        "schema_version": 1,
        "run_id": run["run_id"],
        "batch_name": run.get("batch_name"),
        "outcome": outcome,
        "started_at": iso(run["started_at"]),
        "finished_at": iso(finished_at),
        "elapsed_seconds": round(finished_at - run["started_at"], 3),
        "settings": run.get("settings", {}),
        "state_dir": str(store.root.resolve()),
        "output_dir": run.get("settings", {}).get("output_dir"),
        "summary": summary,
        "tasks": rows,
    }
    path = store.run_dir(run["run_id"]) / "batch_result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)
    store.save_run(run["run_id"], finished_at=finished_at, outcome=outcome, summary=summary)
    return doc
