"""The state directory (CONTRACT.md §6): atomic JSON files, the index, and the queries behind
`status`, `list`, `get` and `history`.

Files are the audit trail; `index.sqlite3` (WAL mode, one row per task) is what makes inspection
fast at 100k tasks. Only the process holding the run lock writes task rows; readers never block
and never see a torn file (every JSON file is written temp + fsync + rename). Tasks that never ran
(rejected, skipped, reused) have an index row carrying their record but no task directory.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from image_queue.errors import NotFoundError, StateError

INDEX_COLUMNS = (
    "task_id", "run_id", "seq", "task_key", "task_name", "status", "provider", "model", "mode",
    "created_at", "started_at", "finished_at", "elapsed_seconds", "attempts", "image_path",
    "error", "pid", "reused_from",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, run_id TEXT, seq INTEGER, task_key TEXT, task_name TEXT, status TEXT,
    provider TEXT, model TEXT, mode TEXT, created_at REAL, started_at REAL, finished_at REAL,
    elapsed_seconds REAL, attempts INTEGER, image_path TEXT, error TEXT, pid INTEGER,
    reused_from TEXT, record BLOB
);
CREATE INDEX IF NOT EXISTS tasks_key ON tasks (task_key, status);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS tasks_run ON tasks (run_id, seq);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at, seq);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (task_name);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pid INTEGER, started_at REAL, finished_at REAL, batch_name TEXT,
    outcome TEXT, summary BLOB
);
"""
_UPSERT = (
    f"INSERT OR REPLACE INTO tasks ({', '.join(INDEX_COLUMNS)}, record) "
    f"VALUES ({', '.join('?' for _ in INDEX_COLUMNS)}, ?)"
)


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` so a reader sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, dumps(data), fsync=fsync)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None if it does not exist. A corrupt file raises StateError."""
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{path} is not valid JSON: {exc}") from None


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), to tell a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def pid_alive(pid: int | None, start_time: int | None) -> bool:
    if not pid:
        return False
    started = process_start_time(pid)
    return started is not None and (start_time is None or started == start_time)


class Store:
    """One state directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tasks_dir = self.root / "tasks"
        self.runs_dir = self.root / "runs"
        self.cancel_dir = self.root / "cancel"
        self.workers_dir = self.root / "workers"
        self.queue_state_path = self.root / "queue_state.json"
        self.lock_path = self.root / "run.lock"
        self.index_path = self.root / "index.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._ro: sqlite3.Connection | None = None

    # -- layout -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the layout; StateError with a clear reason if the directory is unusable."""
        try:
            for d in (self.root, self.tasks_dir, self.runs_dir, self.cancel_dir, self.workers_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe.{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StateError(f"state dir {self.root} is not writable: {exc.strerror or exc}") from None

    def exists(self) -> bool:
        return self.index_path.exists()

    def task_dir(self, task_id: str) -> Path:
        return self.tasks_dir / task_id

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    # -- index ------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            if not self.index_path.exists():
                self.ensure()
            try:
                db = sqlite3.connect(self.index_path, timeout=30, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the index {self.index_path}: {exc}") from None
            self._db = db
        return self._db

    def reader(self) -> sqlite3.Connection | None:
        """A read-only connection, or None if there is no index yet (a fresh state dir)."""
        if not self.index_path.exists():
            return None
        if self._db is not None:
            return self._db
        if self._ro is None:
            try:
                self._ro = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, timeout=30,
                                           isolation_level=None)
                self._ro.execute("PRAGMA query_only=1")
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the index {self.index_path}: {exc}") from None
        return self._ro

    def close(self) -> None:
        for db in (self._db, self._ro):
            if db is not None:
                db.close()
        self._db = self._ro = None

    @staticmethod
    def _row(record: dict[str, Any]) -> tuple[Any, ...]:
        return (*(record.get(c) for c in INDEX_COLUMNS), orjson.dumps(record))

    def index_tasks(self, records: Iterable[dict[str, Any]]) -> None:
        """Upsert index rows for records, in one transaction."""
        try:
            with self._transaction() as db:
                db.executemany(_UPSERT, (self._row(r) for r in records))
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the index {self.index_path}: {exc}") from None

    def save_task(self, record: dict[str, Any]) -> None:
        """Persist a task that has a task dir: task.json (atomic) then its index row."""
        atomic_write_json(self.task_dir(record["task_id"]) / "task.json", record)
        self.index_tasks([record])

    def _transaction(self) -> Any:
        db = self.db

        class _Tx:
            def __enter__(self_inner) -> sqlite3.Connection:
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self_inner, exc_type: Any, *_: Any) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def save_run(self, run_id: str, **fields: Any) -> None:
        cols = ["run_id", *fields]
        vals = [run_id, *(orjson.dumps(v) if k == "summary" else v for k, v in fields.items())]
        sets = ", ".join(f"{c}=excluded.{c}" for c in fields)
        sql = f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        sql += f" ON CONFLICT(run_id) DO UPDATE SET {sets}" if fields else " ON CONFLICT DO NOTHING"
        try:
            self.db.execute(sql, vals)
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the index {self.index_path}: {exc}") from None

    # -- queries ----------------------------------------------------------------------------
    def _select(self, where: str = "", params: Iterable[Any] = (), order: str = "", limit: int | None = None,
                columns: str = "record") -> Iterator[tuple[Any, ...]]:
        db = self.reader()
        if db is None:
            return iter(())
        sql = f"SELECT {columns} FROM tasks" + (f" WHERE {where}" if where else "") + (f" ORDER BY {order}" if order else "")
        if limit:
            sql += f" LIMIT {int(limit)}"
        try:
            return iter(db.execute(sql, tuple(params)).fetchall())
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the index {self.index_path}: {exc}") from None

    def list_tasks(self, *, status: str | None = None, run_id: str | None = None, limit: int | None = 200) -> list[dict[str, Any]]:
        """Task records, newest first."""
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if run_id:
            where.append("run_id = ?")
            params.append(run_id)
        rows = self._select(" AND ".join(where), params, "created_at DESC, seq DESC", limit)
        return [orjson.loads(r[0]) for r in rows]

    def run_tasks(self, run_id: str) -> list[dict[str, Any]]:
        """A run's task records in submission order."""
        return [orjson.loads(r[0]) for r in self._select("run_id = ?", (run_id,), "seq")]

    def active_tasks(self) -> list[dict[str, Any]]:
        """Records still queued or running (by the index)."""
        rows = self._select("status IN ('queued', 'running')", (), "seq")
        return [orjson.loads(r[0]) for r in rows]

    def history(self, n: int = 50) -> list[dict[str, Any]]:
        """The last n finished task records across runs, most recently finished first."""
        rows = self._select("finished_at IS NOT NULL", (), "finished_at DESC", n)
        return [orjson.loads(r[0]) for r in rows]

    def counts(self, run_id: str) -> dict[str, int]:
        db = self.reader()
        if db is None:
            return {}
        rows = db.execute("SELECT status, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY status", (run_id,))
        return {s: n for s, n in rows}

    def find_task(self, id_or_key: str) -> dict[str, Any]:
        """A task by id, else the newest task with that key; NotFoundError naming near matches."""
        for where in ("task_id = ?", "task_key = ?", "task_name = ?"):
            rows = list(self._select(where, (id_or_key,), "created_at DESC, seq DESC", 1))
            if rows:
                record = orjson.loads(rows[0][0])
                task_json = read_json(self.task_dir(record["task_id"]) / "task.json") if record.get("has_dir") else None
                return task_json or record
        near = self.near_matches(id_or_key)
        hint = f"; did you mean: {', '.join(near)}?" if near else ""
        raise NotFoundError(f"no task with id or key {id_or_key!r} in {self.root}{hint}")

    def near_matches(self, text: str, limit: int = 5) -> list[str]:
        import difflib

        db = self.reader()
        if db is None:
            return []
        pattern = f"%{text[:3]}%" if len(text) >= 3 else f"%{text}%"
        # two index-only scans, not one scan of the table (~0.1 s at 100k tasks, seconds on a cold cache)
        keys = [r[0] for r in db.execute("SELECT DISTINCT task_key FROM tasks WHERE task_key LIKE ? LIMIT 2000", (pattern,))]
        if text[:1].isdigit():  # task ids start with the run's date
            keys += [r[0] for r in db.execute(
                "SELECT task_key FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE task_id LIKE ? LIMIT 2000)",
                (pattern,))]
        keys = list(dict.fromkeys(keys))
        if not keys:  # the typo is in the first letters: compare with the most recent keys instead
            keys = list(dict.fromkeys(r[0] for r in db.execute(
                "SELECT task_key FROM tasks ORDER BY created_at DESC, seq DESC LIMIT 2000")))
        close = difflib.get_close_matches(text, keys, n=limit, cutoff=0.5)
        return close or [k for k in keys if text.lower() in k.lower()][:limit]

    def completed_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """For each key, the newest `completed` record whose image still exists."""
        db = self.reader()
        found: dict[str, dict[str, Any]] = {}
        if db is None:
            return found
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            sql = (f"SELECT task_key, record FROM tasks WHERE status = 'completed' AND task_key IN "
                   f"({', '.join('?' for _ in chunk)}) ORDER BY finished_at")
            for key, blob in db.execute(sql, chunk):
                record = orjson.loads(blob)
                if record.get("image_path") and os.path.exists(record["image_path"]):
                    found[key] = record
        return found

    def last_run_id(self) -> str | None:
        db = self.reader()
        if db is None:
            return None
        row = db.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    # -- queue state, batch files, cancel requests --------------------------------------------
    def read_queue_state(self) -> dict[str, Any] | None:
        return read_json(self.queue_state_path)

    def write_queue_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.queue_state_path, state)

    def request_cancel(self, target: str) -> Path:
        """Leave a cancel request (a task id, or ALL) for the live supervisor to act on."""
        self.cancel_dir.mkdir(parents=True, exist_ok=True)
        path = self.cancel_dir / target
        atomic_write_bytes(path, orjson.dumps({"requested_at": time.time(), "pid": os.getpid()}))
        return path

    def pending_cancels(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.cancel_dir) if not e.name.startswith(".")]
        except FileNotFoundError:
            return []

    def clear_cancel(self, target: str) -> None:
        try:
            (self.cancel_dir / target).unlink()
        except FileNotFoundError:
            pass

    def get_task_record(self, task_id: str) -> dict[str, Any] | None:
        rows = list(self._select("task_id = ?", (task_id,)))
        return orjson.loads(rows[0][0]) if rows else None

    def require(self) -> None:
        if not self.root.is_dir():
            raise NotFoundError(f"state dir {self.root} does not exist (run a batch first, or pass --state-dir)")
