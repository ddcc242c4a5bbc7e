"""End-to-end behaviour of `run` on the mock provider: real worker subprocesses, real signals."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import IQ, procs_in_group


def batch_result(iq: IQ, run_id: str | None = None) -> dict:
    runs = sorted((iq.state / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    path = (iq.state / "runs" / run_id) if run_id else runs[-1]
    return orjson.loads((path / "batch_result.json").read_bytes())


def max_overlap(rows: list[dict]) -> int:
    events = []
    for r in rows:
        events += [(r["started_at"], 1), (r["finished_at"], -1)]
    live = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        live += delta
        peak = max(peak, live)
    return peak


def test_110_tasks_admit_104_and_never_run_more_than_4(iq: IQ) -> None:
    """Capacity is max_workers + max_queue_size (104): the rest are rejected queue_full, and at most
    4 workers run at once (from each task's recorded start and end)."""
    tasks = [{"task_key": f"t{i:03d}", "prompt": f"cover {i}", "mock_sleep": 0.05, "size": "64x64"} for i in range(110)]
    proc = iq("run", iq.tasks_file({"tasks": tasks}), "--quiet", timeout=300)
    assert proc.returncode == 1, proc.stderr  # rejected tasks make summary.ok false
    doc = batch_result(iq)
    s = doc["summary"]
    assert (s["total"], s["completed"], s["rejected"]) == (110, 104, 6)
    rejected = [r for r in doc["tasks"] if r["status"] == "rejected"]
    assert [r["task_key"] for r in rejected] == [f"t{i:03d}" for i in range(104, 110)]
    assert all("queue_full" in r["error"] for r in rejected)
    rows = iq.json("list", "--run", doc["run_id"], "--status", "completed", "--limit", "0")["tasks"]
    assert len(rows) == 104
    assert max_overlap(rows) <= 4
    assert max_overlap(rows) >= 2  # the slots really ran in parallel
    for r in rows:
        img = Path(r["image_path"])
        data = img.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (64, 64)


def test_duplicates_skipped_and_invalid_rejected_while_rest_complete(iq: IQ) -> None:
    """Later duplicates of a task_key are skipped; an invalid task is rejected with its index and
    field named; the valid rest still run."""
    tasks = [
        {"task_key": "a", "prompt": "one"},
        {"task_key": "a", "prompt": "two"},
        {"task_key": "b", "promt": "typo"},
        {"task_key": "c", "prompt": "three", "size": "huge"},
        {"task_key": "d", "prompt": "four", "metadata": {"cms_id": 17}},
    ]
    proc = iq("run", iq.tasks_file(tasks))
    assert proc.returncode == 1
    rows = {r["task_key"]: r for r in batch_result(iq)["tasks"]}
    assert [r["task_key"] for r in batch_result(iq)["tasks"]] == ["a", "a", "b", "c", "d"]
    statuses = [r["status"] for r in batch_result(iq)["tasks"]]
    assert statuses == ["completed", "skipped", "rejected", "rejected", "completed"]
    assert "task 2" in rows["b"]["error"] and "'promt'" in rows["b"]["error"]
    assert "task 3" in rows["c"]["error"] and "size" in rows["c"]["error"]
    assert rows["d"]["metadata"] == {"cms_id": 17}
    result = orjson.loads((iq.state / "tasks" / rows["d"]["task_id"] / "result.json").read_bytes())
    assert result["metadata"] == {"cms_id": 17} and result["provider"] == "mock"
    assert "rejected  b: task 2: unknown field 'promt'" in proc.stderr


def test_exit_codes(iq: IQ) -> None:
    """0 when every task ends ok, 1 when the batch ran but something failed, 2 for bad usage or an
    unparseable file (with path, line and column), and never a silent clamp of --max-workers."""
    ok = iq("run", iq.tasks_file([{"task_key": "x", "prompt": "fine"}], "ok.json"))
    assert ok.returncode == 0, ok.stderr
    failed = iq("run", iq.tasks_file([{"task_key": "y", "prompt": "boom", "mock_exit_code": 3}], "bad.json"))
    assert failed.returncode == 1
    (iq.tmp / "broken.json").write_text('{"tasks": [\n  {"prompt": "a",}\n]}')
    broken = iq("run", f"@{iq.tmp / 'broken.json'}")
    assert broken.returncode == 2
    assert "broken.json" in broken.stderr and "line 2" in broken.stderr and "column" in broken.stderr
    too_many = iq("run", "--prompt", "p", "--max-workers", "5")
    assert too_many.returncode == 2 and "--max-workers" in too_many.stderr and "4" in too_many.stderr
    too_long = iq("run", "--prompt", "p", "--max-queue-size", "101")
    assert too_long.returncode == 2 and "--max-queue-size" in too_long.stderr and "100" in too_long.stderr
    in_file = iq("run", iq.tasks_file({"max_workers": 9, "tasks": [{"prompt": "p"}]}, "mw.json"))
    assert in_file.returncode == 2 and "max_workers" in in_file.stderr


def test_hanging_and_term_ignoring_workers_time_out_and_leave_no_process(iq: IQ) -> None:
    """A hanging worker and one that ignores SIGTERM both end timed_out within timeout + grace + 2 s,
    and nothing of their process groups survives (grandchildren included)."""
    timeout, grace = 1.0, 1.0
    tasks = [
        {"task_key": "hang", "prompt": "p", "mock_command": "sleep 60"},
        # the shell ignores TERM and stops the worker itself, so only SIGKILL can end them
        {"task_key": "stubborn", "prompt": "p", "mock_command": "trap '' TERM; kill -STOP $PPID; sleep 60"},
        {"task_key": "fine", "prompt": "p"},
    ]
    started = time.monotonic()
    proc = iq("run", iq.tasks_file(tasks), "--task-timeout-seconds", str(timeout),
              "--kill-grace-seconds", str(grace))
    wall = time.monotonic() - started
    assert proc.returncode == 1
    rows = {r["task_key"]: r for r in batch_result(iq)["tasks"]}
    assert rows["fine"]["status"] == "completed"
    for key in ("hang", "stubborn"):
        assert rows[key]["status"] == "timed_out"
        assert rows[key]["elapsed_seconds"] <= timeout + grace + 2
        record = iq.json("get", key)["task"]
        assert procs_in_group(record["worker"]["pgid"]) == []
    assert "signal 9" in rows["stubborn"]["error"]
    assert wall < 20


def test_grandchild_late_result_never_completes_the_task(iq: IQ) -> None:
    """A grandchild that escapes the process group and writes result.json after its parent was killed
    does not turn the task completed, not now and not on a rerun (which runs it again)."""
    forged = iq.tmp / "forged.json"
    forged.write_bytes(orjson.dumps({"ok": True, "status": "completed", "image_path": "/etc/hostname",
                                     "binding": {"token": "forged", "worker_pid": 1}}))
    script = (f"setsid sh -c 'sleep 2; cp {forged} \"$IMAGE_QUEUE_TASK_DIR/result.json\"' "
              "</dev/null >/dev/null 2>&1 & sleep 60")
    tasks = [{"task_key": "late", "prompt": "p", "mock_command": script}]
    proc = iq("run", iq.tasks_file(tasks), "--task-timeout-seconds", "0.8", "--kill-grace-seconds", "0.3")
    assert proc.returncode == 1
    task_dir = Path(iq.json("get", "late")["paths"]["task.json"]).parent
    iq.wait_for(lambda: b"forged" in (task_dir / "result.json").read_bytes(), timeout=10)
    got = iq.json("get", "late")
    assert got["task"]["status"] == "timed_out"
    assert iq.json("list", "--status", "completed")["tasks"] == []
    rerun = iq("run", iq.tasks_file([{"task_key": "late", "prompt": "p"}], "again.json"), "--json")
    assert rerun.returncode == 0
    assert orjson.loads(rerun.stdout)["tasks"][0]["status"] == "completed"  # ran again, not reused


def test_mismatched_result_at_exit_is_orphan_late_output(iq: IQ) -> None:
    """A worker that exits leaving a result.json without its attempt's token is orphan_late_output."""
    forged = '{"ok": true, "status": "completed", "binding": {"token": "nope"}}'
    tasks = [{"task_key": "x", "prompt": "p",
              "mock_command": f"printf '%s' '{forged}' > \"$IMAGE_QUEUE_TASK_DIR/result.json\"; kill -9 $PPID"}]
    proc = iq("run", iq.tasks_file(tasks))
    assert proc.returncode == 1
    row = batch_result(iq)["tasks"][0]
    assert row["status"] == "orphan_late_output"
    assert "late_output" in row


def test_task_files_and_batch_files_are_written(iq: IQ) -> None:
    """Every run task has task.json, command.json (env names, no values), stdout.txt, stderr.txt and
    result.json with proof fields; the run has batch_request.json and batch_result.json."""
    iq.env["OPENAI_API_KEY"] = "sk-test-secret-value-1234"
    tasks = [{"task_key": "k", "task_name": "../../etc/passwd", "prompt": "p", "mock_output_text": "hello out"}]
    iq("run", iq.tasks_file(tasks), check=0)
    got = iq.json("get", "k")
    task_dir = Path(got["paths"]["task.json"]).parent
    for name in ("task.json", "command.json", "stdout.txt", "stderr.txt", "result.json"):
        assert (task_dir / name).exists(), name
    assert "hello out" in (task_dir / "stdout.txt").read_text()
    command = orjson.loads((task_dir / "command.json").read_bytes())
    assert "OPENAI_API_KEY" in command["env_names"]
    result = orjson.loads((task_dir / "result.json").read_bytes())
    for field in ("ok", "status", "stage", "task_id", "task_key", "image_path", "bytes", "sha256", "provider",
                  "model", "mode", "input_images", "size", "attempts", "elapsed_seconds", "metadata"):
        assert field in result, field
    assert result["provider"] == "mock" and result["ok"] is True
    image = Path(result["image_path"])
    assert image.name == "etc_passwd.png" and image.parent == (iq.state / "images").resolve()
    run_dir = iq.state / "runs" / got["task"]["run_id"]
    assert (run_dir / "batch_request.json").exists() and (run_dir / "batch_result.json").exists()
    for path in iq.state.rglob("*"):
        if path.is_file():
            assert b"sk-test-secret-value-1234" not in path.read_bytes(), path


def test_inspection_reads_a_run_in_progress(iq: IQ) -> None:
    """status, list, get and history answer from another process while a run is going, and a second
    run exits 3 naming the live run's pid."""
    tasks = [{"task_key": f"s{i}", "prompt": "p", "mock_sleep": 4 if i < 2 else 0.1} for i in range(6)]
    run = iq.popen("run", iq.tasks_file(tasks), "--max-workers", "2")
    try:
        st = iq.wait_for(lambda: (s := iq.json("status")) and s["alive"] and len(s["run"]["running"]) == 2 and s)
        assert st["run"]["pid"] == run.pid
        assert {r["task_key"] for r in st["run"]["running"]} == {"s0", "s1"}
        running = iq.json("list", "--status", "running")["tasks"]
        assert {r["task_key"] for r in running} == {"s0", "s1"}
        assert iq.json("get", "s0")["task"]["status"] == "running"
        assert iq("status").returncode == 0
        iq.json("history")
        second = iq("run", "--prompt", "other")
        assert second.returncode == 3 and str(run.pid) in second.stderr
    finally:
        out, errs = run.communicate(timeout=60)
    assert run.returncode == 0, errs
    assert iq.json("status")["alive"] is False
    assert len(iq.json("history", "-n", "3")["tasks"]) == 3


def test_cancel_queued_task(iq: IQ) -> None:
    """`cancel KEY` on a queued task of the live run marks it cancelled and it never runs."""
    tasks = [{"task_key": "first", "prompt": "p", "mock_sleep": 3}, {"task_key": "second", "prompt": "p"}]
    run = iq.popen("run", iq.tasks_file(tasks), "--max-workers", "1")
    try:
        iq.wait_for(lambda: iq.json("status")["alive"])
        iq("cancel", "second", check=0)
        assert iq.json("get", "second")["task"]["status"] == "cancelled"
    finally:
        run.communicate(timeout=60)
    assert run.returncode == 1
    rows = {r["task_key"]: r["status"] for r in batch_result(iq)["tasks"]}
    assert rows == {"first": "completed", "second": "cancelled"}


def test_stdin_jsonl_and_single_prompt_forms(iq: IQ) -> None:
    """Tasks come from @- (stdin), .jsonl files and --prompt/--task-key; completed keys are reused."""
    lines = b'{"task_key": "j1", "prompt": "a"}\n{"task_key": "j2", "prompt": "b"}\n'
    assert iq("run", "@-", input=lines).returncode == 0
    (iq.tmp / "t.jsonl").write_bytes(lines)
    again = orjson.loads(iq("run", f"@{iq.tmp / 't.jsonl'}", "--json", check=0).stdout)
    assert [r["status"] for r in again["tasks"]] == ["reused", "reused"]
    assert again["tasks"][0]["reused_from"]
    single = orjson.loads(iq("run", "--prompt", "a poster", "--task-key", "p1", "--json", check=0).stdout)
    assert single["tasks"][0]["task_key"] == "p1" and single["tasks"][0]["status"] == "completed"
    forced = orjson.loads(iq("run", "--prompt", "a poster", "--task-key", "p1", "--force", "--json", check=0).stdout)
    assert forced["tasks"][0]["status"] == "completed"
