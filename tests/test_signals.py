"""Signals to `run` and `cancel` of running tasks: clean stops, right statuses, no orphans."""

from __future__ import annotations

import signal
import time

import orjson

from tests.conftest import IQ, procs_in_group

SLOW = [{"task_key": f"s{i}", "prompt": "p", "mock_command": "sleep 60"} for i in range(3)] + \
       [{"task_key": "queued", "prompt": "p"}]


def _start_slow(iq: IQ, *extra: str):
    run = iq.popen("run", iq.tasks_file(SLOW), "--max-workers", "3", *extra)
    iq.wait_for(lambda: (s := iq.json("status")) and s["alive"] and len(s["run"]["running"]) == 3)
    pgids = [iq.json("get", f"s{i}")["task"]["worker"]["pgid"] for i in range(3)]
    return run, pgids


def _batch(iq: IQ) -> dict:
    run_id = iq.json("status")["run"]["run_id"]
    return orjson.loads((iq.state / "runs" / run_id / "batch_result.json").read_bytes())


def test_sigint_cancels_running_and_queued_and_exits_130(iq: IQ) -> None:
    """SIGINT stops admitting, terminates every running worker's group, marks tasks cancelled, writes
    batch_result.json and exits 130; no worker process survives."""
    run, pgids = _start_slow(iq, "--kill-grace-seconds", "1")
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert run.returncode == 130
    statuses = {r["task_key"]: r["status"] for r in _batch(iq)["tasks"]}
    assert statuses == {"s0": "cancelled", "s1": "cancelled", "s2": "cancelled", "queued": "cancelled"}
    assert _batch(iq)["outcome"] == "interrupted"
    for pgid in pgids:
        assert procs_in_group(pgid) == []


def test_sigterm_exits_143(iq: IQ) -> None:
    """SIGTERM behaves like SIGINT but exits 143."""
    run, pgids = _start_slow(iq, "--kill-grace-seconds", "1")
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=30)
    assert run.returncode == 143
    assert all(r["status"] == "cancelled" for r in _batch(iq)["tasks"])
    for pgid in pgids:
        assert procs_in_group(pgid) == []


def test_second_sigint_kills_at_once(iq: IQ) -> None:
    """A second SIGINT does not wait out the grace period: workers that ignore SIGTERM die at once."""
    tasks = [{"task_key": "stubborn", "prompt": "p", "mock_command": "trap '' TERM; kill -STOP $PPID; sleep 60"}]
    run = iq.popen("run", iq.tasks_file(tasks), "--kill-grace-seconds", "60")
    iq.wait_for(lambda: (s := iq.json("status")) and s["alive"] and s["run"]["running"])
    pgid = iq.json("get", "stubborn")["task"]["worker"]["pgid"]
    time.sleep(0.5)  # let the worker stop itself
    run.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert time.monotonic() - started < 10  # not the 60 s grace
    assert run.returncode == 130
    assert procs_in_group(pgid) == []


def test_cancel_running_task_within_a_second(iq: IQ) -> None:
    """`cancel KEY` on a running task: the live run kills that worker's group promptly and records
    cancelled; the other tasks carry on."""
    tasks = [{"task_key": "victim", "prompt": "p", "mock_command": "sleep 60"},
             {"task_key": "bystander", "prompt": "p", "mock_sleep": 2}]
    run = iq.popen("run", iq.tasks_file(tasks), "--kill-grace-seconds", "0.5")
    try:
        iq.wait_for(lambda: iq.task_status("victim") == "running" and iq.task_status("bystander") == "running")
        pgid = iq.json("get", "victim")["task"]["worker"]["pgid"]
        started = time.monotonic()
        done = iq("cancel", "victim", "--json", check=0)
        assert time.monotonic() - started < 10.0  # the CLI round trip; the 1 s rule is tested below
        assert orjson.loads(done.stdout)["tasks"] == {iq.json("get", "victim")["task"]["task_id"]: "cancelled"}
        record = iq.json("get", "victim")["task"]
        assert record["status"] == "cancelled"
        assert record["finished_at"] - record["started_at"] < 60
        assert procs_in_group(pgid) == []
    finally:
        run.communicate(timeout=60)
    assert run.returncode == 1
    statuses = {r["task_key"]: r["status"] for r in _batch(iq)["tasks"]}
    assert statuses == {"victim": "cancelled", "bystander": "completed"}


def test_cancel_request_is_noticed_within_one_second(iq: IQ) -> None:
    """From the cancel request to the worker's group being signalled takes under a second."""
    run = iq.popen("run", iq.tasks_file([{"task_key": "v", "prompt": "p", "mock_command": "sleep 60"}]),
                   "--kill-grace-seconds", "0.2")
    try:
        iq.wait_for(lambda: iq.task_status("v") == "running")
        task_id = iq.json("get", "v")["task"]["task_id"]
        (iq.state / "cancel" / task_id).write_text("{}")
        requested = time.time()
        iq.wait_for(lambda: iq.task_status("v") == "cancelled", timeout=10, interval=0.02)
        record = iq.json("get", "v")["task"]
        assert record["finished_at"] - requested < 1.0 + 0.2 + 0.3
    finally:
        run.communicate(timeout=60)


def test_cancel_all(iq: IQ) -> None:
    """`cancel --all` cancels every queued and running task of the live run."""
    run, pgids = _start_slow(iq, "--kill-grace-seconds", "0.5")
    try:
        iq("cancel", "--all", check=0)
    finally:
        run.communicate(timeout=60)
    assert run.returncode == 1
    assert {r["status"] for r in _batch(iq)["tasks"]} == {"cancelled"}
    for pgid in pgids:
        assert procs_in_group(pgid) == []
    assert iq("cancel", "--all").returncode == 2  # no live run: nothing to cancel
