"""What a person sees while `run` works.

On a terminal: a live display (cli/live.py; rich, imported only then) with one line per worker
slot, totals by status, throughput and an ETA, redrawn by its own timer thread. Anywhere else (CI,
pipes, logs): one timestamped line per event on stderr. With a live display the supervisor's
`on_event` calls only update a few dicts under a lock; drawing happens on the display's thread.

Retries happen inside a worker, so they are read from the task's `attempts.jsonl` journal (one line
per HTTP attempt, written by image_queue.http) by a small polling thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import orjson

from image_queue.cli.common import err

OK_STATUSES = ("completed", "reused")
POLL_SECONDS = 0.5
SNAPSHOT_KEYS = ("task_id", "task_key", "status", "started_at", "elapsed_seconds", "image_path", "error",
                 "diagnosis", "pid", "attempts")


def wants_live(stream: TextIO) -> bool:
    """A live display only for a real terminal that can move its cursor."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def make_reporter(*, quiet: bool, json_out: bool, store: Any) -> "Reporter":
    """Live display on a terminal; plain event lines otherwise; nothing with --quiet (and plain --json)."""
    if quiet:
        return Reporter(store)
    if wants_live(sys.stderr):
        from image_queue.cli.live import LiveReporter

        return LiveReporter(store)
    if json_out:
        return Reporter(store)  # a script reading stdout: stderr stays for errors only
    return PlainReporter(store)


def _slot_number(record: dict[str, Any]) -> int | None:
    """The supervisor's slot index from a worker id like `slot2-7`, if it has that shape."""
    worker_id = str((record.get("worker") or {}).get("worker_id") or "")
    try:
        return int(worker_id.removeprefix("slot").split("-")[0])
    except ValueError:
        return None


def _snapshot(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in SNAPSHOT_KEYS}


def _why(snap: dict[str, Any]) -> str:
    human = (snap.get("diagnosis") or {}).get("human_reason") or ""
    error = snap.get("error") or ""
    return " — ".join(p for p in (error, human) if p)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class AttemptWatcher:
    """Tails the attempts.jsonl of running tasks and reports each attempt line to `on_attempt`."""

    def __init__(self, store: Any, on_attempt: Callable[[str, dict[str, Any]], None]) -> None:
        self.store, self.on_attempt = store, on_attempt
        self._files: dict[str, list[Any]] = {}  # task_id -> [path, offset, partial line]
        self._lock = threading.Lock()
        self._serial = threading.Lock()  # a journal's lines are read and reported by one thread at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="attempt-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, task_id: str) -> None:
        with self._lock:
            self._files[task_id] = [self.store.task_dir(task_id) / "attempts.jsonl", 0, b""]

    def finish(self, task_id: str) -> None:
        """Report what the task's journal gained since the last poll, then stop watching it."""
        with self._serial:
            self._report(self._read(task_id))
            with self._lock:
                self._files.pop(task_id, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            watched = list(self._files)
        for task_id in watched:
            with self._serial:
                self._report(self._read(task_id))

    def _read(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        """New complete lines of one journal; under the lock so two readers never share a line."""
        found: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            entry = self._files.get(task_id)
            if entry is None:
                return found
            path, offset, partial = entry
            try:
                if os.stat(path).st_size <= offset:
                    return found
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                return found
            entry[1] = offset + len(data)
            *lines, entry[2] = (partial + data).split(b"\n")
        for line in lines:
            try:
                attempt = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(attempt, dict):
                found.append((task_id, attempt))
        return found

    def _report(self, found: list[tuple[str, dict[str, Any]]]) -> None:
        for task_id, attempt in found:
            self.on_attempt(task_id, attempt)


class Tracker:
    """The counts and slots both displays draw from. Every method is a few dict operations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run_id = self.batch_name = ""
        self.workers = 0
        self.to_run = 0
        self.done = 0
        self.completed = 0
        self.counts: dict[str, int] = {}
        self.slots: dict[int, dict[str, Any]] = {}
        self.slot_of: dict[str, int] = {}  # task_id -> slot index
        self.records: dict[str, dict[str, Any]] = {}
        self.began = time.monotonic()
        self.first_start: float | None = None

    def plan(self, plan: Any, run: dict[str, Any]) -> None:
        with self.lock:
            self.run_id, self.batch_name = run["run_id"], run.get("batch_name") or ""
            self.workers = int(run.get("settings", {}).get("max_workers") or 4)
            names = {"run": "queued", "reuse": "reused", "skip": "skipped", "reject": "rejected"}
            for item in plan.items:
                status = names[item.action]
                self.counts[status] = self.counts.get(status, 0) + 1
            self.to_run = self.counts.get("queued", 0)

    def _move(self, old: str, new: str) -> None:
        self.counts[old] = max(0, self.counts.get(old, 0) - 1)
        self.counts[new] = self.counts.get(new, 0) + 1

    def event(self, kind: str, record: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        snap = _snapshot(record)
        with self.lock:
            task_id = snap["task_id"]
            slot = self.slots.get(self.slot_of.get(task_id, -1))
            if kind == "started":
                self.first_start = self.first_start or time.monotonic()
                self._move("queued", "running")
                self.records[task_id] = record
                index = _slot_number(record)
                if index is None:
                    index = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
                elif index in self.slots:  # the slot's next task starts just before its last one's "finished"
                    self.slot_of.pop(self.slots[index]["task_id"], None)
                self.slot_of[task_id] = index
                self.slots[index] = {**snap, "attempt": 1, "state": "running", "since": time.monotonic()}
            elif kind == "timeout" and slot is not None:
                slot["state"] = "timed out: stopping"
            elif kind == "retry" and slot is not None:
                slot["attempt"] = extra.get("attempt") or slot["attempt"]
                delay = float(extra.get("delay") or 0)
                slot["state"] = f"retry in {delay:.{1 if delay < 10 else 0}f}s ({extra.get('category') or 'error'})"
            elif kind == "attempt" and slot is not None and extra.get("billable"):
                slot["attempt"], slot["state"] = extra.get("attempt") or slot["attempt"], "running"
            elif kind in ("finished", "cancelled"):
                self.records.pop(task_id, None)
                if task_id in self.slot_of:
                    self.slots.pop(self.slot_of.pop(task_id), None)
                self._move("running" if kind == "finished" else "queued", snap["status"] or "failed")
                self.done += 1
                self.completed += snap["status"] == "completed"
        return snap

    def rates(self) -> tuple[float | None, float | None]:
        """(images completed per minute, seconds left) once there is something to go on."""
        if self.first_start is None or not self.done:
            return None, None
        elapsed = max(1e-6, time.monotonic() - self.first_start)
        remaining = self.to_run - self.done
        per_second = self.done / elapsed
        return self.completed / elapsed * 60, (remaining / per_second if per_second else None)


class Reporter:
    """Shows nothing (--quiet); the base the other displays extend."""

    watches_attempts = False

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tracker = Tracker()
        self.watcher = AttemptWatcher(store, self._on_attempt)
        self.broken = False

    def on_plan(self, plan: Any, run: dict[str, Any]) -> None:
        try:
            self.tracker.plan(plan, run)
            if self.watches_attempts:
                self.watcher.start()
            self.show_plan(plan, run)
        except Exception as exc:  # a display problem must never stop a batch that is paying for images
            self._give_up(exc)

    def on_event(self, kind: str, record: dict[str, Any], **extra: Any) -> None:
        if self.broken:
            return
        try:
            if self.watches_attempts and kind == "started":
                self.watcher.watch(record["task_id"])
            elif self.watches_attempts and kind == "finished":
                self.watcher.finish(record["task_id"])  # a quick retry must not go unreported
            snap = self.tracker.event(kind, record, extra)
            self.show_event(kind, snap, extra)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        """Stop showing progress (e.g. stderr is a closed pipe); the run itself goes on."""
        self.broken = True
        self.watcher.stop()
        try:
            err(f"image_queue: progress display stopped: {exc!r}")
        except (OSError, ValueError):
            pass

    def _on_attempt(self, task_id: str, attempt: dict[str, Any]) -> None:
        record = self.tracker.records.get(task_id)
        if record is None:
            return
        if attempt.get("retry_in_seconds") is not None:
            self.on_event("retry", record, attempt=int(attempt.get("attempt") or 1) + 1,
                          delay=attempt["retry_in_seconds"], category=attempt.get("category"),
                          http_status=attempt.get("status"), error=attempt.get("error"), stage=attempt.get("stage"))
        else:
            self.tracker.event("attempt", record, attempt)

    def show_plan(self, plan: Any, run: dict[str, Any]) -> None:
        pass

    def show_event(self, kind: str, snap: dict[str, Any], extra: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.watcher.stop()
        self.broken = True


def plan_lines(plan: Any, run: dict[str, Any], root: Path) -> list[str]:
    n = {a: len(plan.by_action(a)) for a in ("run", "reuse", "skip", "reject")}
    lines = [f"run {run['run_id']}: {n['run']} to run, {n['reuse']} reused, {n['skip']} skipped, "
             f"{n['reject']} rejected (capacity {plan.capacity}); state {root}"]
    for item in plan.items:
        if item.action == "reject":
            lines.append(f"rejected  {item.key or f'task[{item.index}]'}: {item.reason}")
    return lines


class PlainReporter(Reporter):
    """One timestamped line per event on stderr: for CI, pipes and log files."""

    watches_attempts = True

    def __init__(self, store: Any, stream: TextIO | None = None) -> None:
        super().__init__(store)
        self.stream = stream
        self._write_lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._write_lock:  # retries arrive from the watcher thread
            if self.stream is None:
                err(line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def show_plan(self, plan: Any, run: dict[str, Any]) -> None:
        for line in plan_lines(plan, run, self.store.root):
            self._write(line)

    def show_event(self, kind: str, snap: dict[str, Any], extra: dict[str, Any]) -> None:
        self._write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {event_line(kind, snap, extra)}")


def event_line(kind: str, snap: dict[str, Any], extra: dict[str, Any]) -> str:
    """One event without its timestamp, e.g. `finished  cover-01  completed in 2.1s  /x/cover-01.png`."""
    key = snap.get("task_key")
    if kind == "started":
        return f"started   {key}  (task {snap['task_id']}, pid {snap.get('pid')})"
    if kind == "finished":
        secs = snap.get("elapsed_seconds") or 0
        if snap.get("status") in OK_STATUSES:
            return f"finished  {key}  {snap['status']} in {secs:.1f}s  {snap.get('image_path') or ''}".rstrip()
        return f"finished  {key}  {snap.get('status')} in {secs:.1f}s: {_why(snap)}".rstrip(": ")
    if kind == "timeout":
        return f"timeout   {key}  over its time limit; terminating its worker"
    if kind == "retry":
        status = f"HTTP {extra['http_status']} " if extra.get("http_status") else ""
        return (f"retry     {key}  attempt {extra.get('attempt')} in {extra.get('delay') or 0:.1f}s after "
                f"{status}{extra.get('category') or 'error'}: {extra.get('error') or ''}").rstrip(": ")
    if kind == "cancelled":
        return f"cancelled {key}  {snap.get('error') or ''}".rstrip()
    return f"{kind:<9} {key}"
