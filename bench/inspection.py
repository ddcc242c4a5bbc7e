"""Benchmark 2: inspection commands against a state dir holding 100,000 finished tasks.

    .venv/bin/python bench/inspection.py [--tasks 100000] [--repeat 5] [--rebuild] [--plans]

Builds bench/out/state-<N>/ once (reused on later runs; --rebuild to redo it) through the store's
own API: Store.save_run + Store.index_tasks with records shaped like runner.py's `_record` after the
supervisor finished them (1,000 runs of 100 tasks: ~94% completed, 3% failed, 1% timed_out, 1%
reused, 1% rejected), a finished queue_state.json like QueueState.close writes, and full task dirs
(task.json, command.json, result.json, stdout/stderr) for the last run's tasks.

Then times `status`, `list --status failed`, `get <key>` and `history -n 50` as whole processes
(`python -m image_queue ...`, stdout to a pipe; one warm-up, then the median of --repeat runs),
and lists which heavy modules each command imported (from `python -X importtime`).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IQ, OUT, REPO, bench_env, machine, median, table  # noqa: E402

sys.path.insert(0, str(REPO))
from image_queue.store import Store, atomic_write_json  # noqa: E402

HEAVY = ("typer", "click", "rich", "pydantic", "httpx")
RUN_SIZE = 100


def finished_record(run_id: str, seq: int, created: float, rng: random.Random, images: Path) -> dict[str, Any]:
    """A task record as runner._record makes it and the supervisor leaves it when the task ends."""
    key = f"post-{run_id[-6:]}-{seq:03d}-cover"
    roll = rng.random()
    status = ("completed" if roll < 0.94 else "failed" if roll < 0.97 else "timed_out" if roll < 0.98
              else "reused" if roll < 0.99 else "rejected")
    ran = status in ("completed", "failed", "timed_out")
    started = created + 0.05 + (seq // 4) * 31.0 if ran else None
    elapsed = round(rng.uniform(20, 40), 3) if ran else None
    finished = started + elapsed if ran else created
    task_id = f"{run_id}-{seq:05d}"
    rec: dict[str, Any] = {
        "task_id": task_id, "run_id": run_id, "seq": seq, "task_key": key, "task_name": key,
        "status": status, "provider": "openai", "provider_kind": "openai-images", "model": "gpt-image-2",
        "mode": "generation", "size": "1536x1024",
        "prompt": f"Editorial illustration for post {seq}: a lighthouse at dusk, flat colours, no text " * 2,
        "created_at": created, "started_at": started, "finished_at": finished, "elapsed_seconds": elapsed,
        "attempts": 1 if ran else 0, "image_path": None, "error": None, "diagnosis": None, "reason": None,
        "metadata": {"post_id": seq, "section": "blog"}, "reused_from": None, "has_dir": ran,
        "timeout_seconds": None,
    }
    if ran:
        worker_pid = 100000 + seq
        rec.update(pid=worker_pid, returncode=0 if status == "completed" else 1 if status == "failed" else -15,
                   worker={"worker_id": f"slot{seq % 4}-{seq // 4 + 1}", "pid": worker_pid, "pgid": worker_pid,
                           "pid_start_time": 123456 + seq, "token": f"{rng.getrandbits(128):032x}", "attempt": 1},
                   stage="done" if status == "completed" else "generate")
    if status == "completed":
        rec["image_path"] = str(images / f"{key}.png")
    elif status == "failed":
        rec.update(error="HTTP 400 (moderation_blocked): Your request was rejected by the safety system.",
                   diagnosis={"category": "moderation_blocked", "retryable": False,
                              "human_reason": "The provider's safety system refused this prompt."})
    elif status == "timed_out":
        rec.update(error="timed out after 600 s; worker process group terminated (killed by signal 15)",
                   diagnosis={"category": "timeout", "retryable": True, "human_reason": "The image took too long."})
    elif status == "reused":
        rec.update(reused_from=f"{run_id}-prev", image_path=str(images / f"{key}.png"))
    else:
        rec.update(error="queue_full: the run admits 104 tasks", reason="queue_full: the run admits 104 tasks",
                   diagnosis={"category": "queue_full", "retryable": True, "human_reason": "Submit the rest again."})
    return rec


def build_state(root: Path, n: int) -> dict[str, str]:
    """Write the state dir; return a key and an id that `get` can look up."""
    rng = random.Random(1042)
    store = Store(root)
    store.ensure()
    images = (root / "images").resolve()
    images.mkdir(exist_ok=True)
    t0 = time.time() - n // RUN_SIZE * 3600  # one run an hour, ending now
    runs = (n + RUN_SIZE - 1) // RUN_SIZE
    last: list[dict[str, Any]] = []
    run_id = ""
    for r in range(runs):
        created = t0 + r * 3600
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created)) + f"-{r:06x}"
        records = [finished_record(run_id, seq, created, rng, images) for seq in range(min(RUN_SIZE, n - r * RUN_SIZE))]
        store.save_run(run_id, pid=4242, started_at=created, finished_at=created + 900, batch_name=f"blog-{r}",
                       outcome="finished")
        store.index_tasks(records)
        last = records
    for rec in last:  # the last run: full task dirs, as a real run leaves them
        if not rec["has_dir"]:
            continue
        d = store.task_dir(rec["task_id"])
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "task.json", rec, fsync=False)
        atomic_write_json(d / "command.json", {"argv": [sys.executable, "-m", "image_queue.worker"], "pid": rec["pid"],
                                               "env_names": ["OPENAI_API_KEY"], "timeout_seconds": 600}, fsync=False)
        atomic_write_json(d / "result.json", {"ok": rec["status"] == "completed", "status": rec["status"],
                                              "task_id": rec["task_id"], "image_path": rec["image_path"]}, fsync=False)
        (d / "stdout.txt").write_text("")
        (d / "stderr.txt").write_text("retrying in 0.5s (attempt 2 of 3)\n" * 3)
    counts: dict[str, int] = {}
    for rec in last:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    started = last[0]["created_at"]
    atomic_write_json(root / "queue_state.json", {
        "run_id": run_id, "batch_name": f"blog-{runs - 1}", "pid": 4242, "pid_start_time": 1,
        "started_at": started, "state_dir": str(root.resolve()),
        "settings": {"max_workers": 4, "max_queue_size": 100, "capacity": 104, "task_timeout_seconds": 600.0,
                     "kill_grace_seconds": 5.0, "max_attempts": 3, "force": False, "output_dir": str(images),
                     "provider": "openai", "config": "image_queue.toml"},
        "state": "finished", "finished_at": started + 900, "counts": counts, "running": [], "queued": 0,
        "summary": {"ok": False, "total": len(last), **counts},
    })
    store.close()
    mid = (runs // 2) * RUN_SIZE + 7
    probe_run = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t0 + (mid // RUN_SIZE) * 3600)) + f"-{mid // RUN_SIZE:06x}"
    (root / ".bench-complete").write_text(str(n))
    return {"key": f"post-{probe_run[-6:]}-{mid % RUN_SIZE:03d}-cover"}


def evict(root: Path) -> None:
    """Drop the index files from the page cache (posix_fadvise DONTNEED): a cold-cache run."""
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        try:
            fd = os.open(root / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def imported(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True, cwd=OUT)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    return ", ".join(m for m in HEAVY if m in names) or "none of " + "/".join(HEAVY)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--plans", action="store_true", help="also print EXPLAIN QUERY PLAN of the store's queries")
    ap.add_argument("--cold", action="store_true", help="drop the index from the page cache before every run")
    args = ap.parse_args()
    root = OUT / f"state-{args.tasks}"
    marker = root / ".bench-complete"
    if args.rebuild or not marker.exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        info = build_state(root, args.tasks)
        print(f"# built {root} in {time.perf_counter() - t:.1f}s")
    store = Store(root)
    key = store.list_tasks(limit=1)[0]["task_key"]
    db = store.reader()
    assert db is not None
    total = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    mid_key = db.execute("SELECT task_key FROM tasks ORDER BY created_at, seq LIMIT 1 OFFSET ?", (total // 2,)).fetchone()[0]
    store.close()
    size_mb = (root / "index.sqlite3").stat().st_size / 1e6
    print(f"# inspection: {total} tasks in {root} (index {size_mb:.0f} MB), median of {args.repeat} after 1 warm-up"
          + (", index evicted from the page cache before every run" if args.cold else ""))
    print(f"# {machine()}")
    env = bench_env()
    commands = [("status", ["status"]), ("list --status failed", ["list", "--status", "failed"]),
                (f"get {mid_key}", ["get", mid_key]), (f"get {key} (has a task dir)", ["get", key]),
                (f"get {mid_key[:-2]}x (a typo: near matches)", ["get", mid_key[:-2] + "x"]),
                ("history -n 50", ["history", "-n", "50"]),
                ("list --status failed --json", ["list", "--status", "failed", "--json"]),
                ("(python -c pass)", None)]
    rows = []
    for label, cmd in commands:
        argv = [*IQ, *cmd, "--state-dir", str(root)] if cmd else [IQ[0], "-c", "pass"]
        times, lines = [], 0
        for i in range(args.repeat + 1):
            t = time.perf_counter()
            if args.cold:
                evict(root)
                t = time.perf_counter()
            proc = subprocess.run(argv, env=env, capture_output=True, cwd=OUT)  # not the repo: PYTHONPATH must win
            dt = time.perf_counter() - t
            if proc.returncode != 0 and "typo" not in label:
                raise SystemExit(f"{label} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
            lines = proc.stdout.count(b"\n")
            if i:
                times.append(dt)
        verdict = "" if cmd is None or "typo" in label else ("ok" if median(times) <= 0.30 else "OVER")
        rows.append([label, f"{median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}", lines,
                     imported(argv, env) if cmd else "-", verdict])
    print()
    print(table(["command", "median s", "min s", "max s", "stdout lines", "heavy imports", "≤ 0.30 s"], rows))
    if args.plans:
        print_plans(root, mid_key)


def print_plans(root: Path, key: str) -> None:
    import sqlite3

    db = sqlite3.connect(f"file:{root / 'index.sqlite3'}?mode=ro", uri=True)
    queries = {
        "list --status failed": ("SELECT record FROM tasks WHERE status = ? ORDER BY created_at DESC, seq DESC LIMIT 200", ("failed",)),
        "list": ("SELECT record FROM tasks ORDER BY created_at DESC, seq DESC LIMIT 200", ()),
        "get (by id)": ("SELECT record FROM tasks WHERE task_id = ? ORDER BY created_at DESC, seq DESC LIMIT 1", (key,)),
        "get (by key)": ("SELECT record FROM tasks WHERE task_key = ? ORDER BY created_at DESC, seq DESC LIMIT 1", (key,)),
        "get (by name)": ("SELECT record FROM tasks WHERE task_name = ? ORDER BY created_at DESC, seq DESC LIMIT 1", (key,)),
        "history": ("SELECT record FROM tasks WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 50", ()),
        "counts": ("SELECT status, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY status", ("x",)),
        "last run": ("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1", ()),
    }
    print()
    for label, (sql, params) in queries.items():
        plan = "; ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        t = time.perf_counter()
        db.execute(sql, params).fetchall()
        print(f"{label:<22} {1000 * (time.perf_counter() - t):7.2f} ms  {plan}")


if __name__ == "__main__":
    main()
