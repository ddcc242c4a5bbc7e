"""Killing, rerunning and recovering: nothing lost, nothing paid twice, nothing left running."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.conftest import IQ, live_processes, procs_in_group


def mock_calls(log: Path) -> Counter:
    if not log.exists():
        return Counter()
    return Counter(orjson.loads(line)["task_key"] for line in log.read_bytes().splitlines() if line)


def all_records(iq: IQ) -> list[dict]:
    return iq.json("list", "--limit", "0")["tasks"]


def worker_pids(iq: IQ) -> list[int]:
    """Live processes running our worker module with this test's state dir in their environment."""
    return [p["pid"] for p in live_processes()
            if b"image_queue.worker" in p["cmdline"] and str(iq.state).encode() in p["environ"]]


def assert_state_json_parses(iq: IQ) -> None:
    for path in iq.state.rglob("*.json"):
        orjson.loads(path.read_bytes())


def test_sigkilled_supervisor_is_recovered_and_rerun_resumes(iq: IQ) -> None:
    """After SIGKILL of `run`, `status` sees the dead pid, adopts a bound finished result as completed
    (no second call), marks unfinished work orphaned/cancelled, kills leftover workers; rerunning the
    same file runs only what is not completed and reuses the rest."""
    log = iq.tmp / "mock.log"
    iq.env["IMAGE_QUEUE_MOCK_LOG"] = str(log)
    tasks = [{"task_key": "quick", "prompt": "p", "mock_sleep": 0.1},
             {"task_key": "slow", "prompt": "p", "mock_sleep": 30},
             {"task_key": "late1", "prompt": "p"}, {"task_key": "late2", "prompt": "p"}]
    src = iq.tasks_file(tasks)
    run = iq.popen("run", src, "--max-workers", "2")
    iq.wait_for(lambda: iq.task_status("quick") == "completed", timeout=20)
    iq.wait_for(lambda: iq.task_status("slow") == "running", timeout=20)
    slow_pgid = iq.json("get", "slow")["task"]["worker"]["pgid"]
    os.kill(run.pid, signal.SIGKILL)
    run.communicate()
    assert procs_in_group(slow_pgid)  # the worker outlived its supervisor...
    st = iq.json("status")
    assert st["alive"] is False and st["run"]["state"] == "crashed"
    assert procs_in_group(slow_pgid) == []  # ...until recovery killed it
    rows = {r["task_key"]: r["status"] for r in all_records(iq)}
    assert rows["slow"] == "orphaned" and rows["quick"] == "completed"
    assert_state_json_parses(iq)
    rerun = iq("run", src, "--json")
    assert rerun.returncode == 0, rerun.stderr
    doc = orjson.loads(rerun.stdout)
    statuses = {r["task_key"]: r["status"] for r in doc["tasks"]}
    assert statuses["quick"] == "reused"
    assert mock_calls(log)["quick"] == 1


def test_recovery_adopts_a_result_finished_after_the_supervisor_died(iq: IQ) -> None:
    """A worker that completes after its supervisor was SIGKILLed leaves a bound result.json; the
    next run adopts it as completed and does not pay for it again."""
    log = iq.tmp / "mock.log"
    iq.env["IMAGE_QUEUE_MOCK_LOG"] = str(log)
    src = iq.tasks_file([{"task_key": "k", "prompt": "p", "mock_sleep": 1.5}])
    run = iq.popen("run", src)
    iq.wait_for(lambda: iq.task_status("k") == "running", timeout=20)
    os.kill(run.pid, signal.SIGKILL)
    run.communicate()
    task_dir = Path(iq.json("get", "k")["paths"]["task.json"]).parent
    iq.wait_for(lambda: (task_dir / "result.json").exists(), timeout=20)
    rerun = orjson.loads(iq("run", src, "--json", check=0).stdout)
    assert rerun["tasks"][0]["status"] == "reused"
    first = iq.json("list", "--limit", "0")["tasks"]
    adopted = [r for r in first if r["status"] == "completed"]
    assert len(adopted) == 1 and Path(adopted[0]["image_path"]).exists()
    assert mock_calls(log)["k"] == 1


def test_chaos_sigkill_at_random_points_then_rerun_until_done(iq: IQ) -> None:
    """40 mock tasks, the supervisor SIGKILLed at random moments, rerun until done: every key ends
    completed exactly once, provider calls match the attempts that started, every JSON file parses,
    and no worker process is left."""
    log = iq.tmp / "mock.log"
    iq.env["IMAGE_QUEUE_MOCK_LOG"] = str(log)
    rng = random.Random(20261121)
    tasks = [{"task_key": f"c{i:02d}", "prompt": f"chaos {i}", "mock_sleep": rng.choice([0.05, 0.2, 0.4])}
             for i in range(40)]
    src = iq.tasks_file(tasks)
    kills = 0
    for _ in range(4):
        run = iq.popen("run", src, "--quiet")
        time.sleep(rng.uniform(0.4, 2.0))
        if run.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
            kills += 1
        run.communicate()
    final = None
    for _ in range(6):
        proc = iq("run", src, "--json", timeout=300)
        final = orjson.loads(proc.stdout)
        if proc.returncode == 0:
            break
    assert final is not None and final["summary"]["ok"], final["summary"]
    assert kills >= 2
    records = all_records(iq)
    completed = Counter(r["task_key"] for r in records if r["status"] == "completed")
    assert completed == Counter({t["task_key"]: 1 for t in tasks})
    started = Counter(r["task_key"] for r in records if r["started_at"] is not None)
    calls = mock_calls(log)
    assert sum(calls.values()) <= sum(started.values())  # nothing called that no attempt accounts for
    for key, n in calls.items():
        assert n <= started[key]
    assert_state_json_parses(iq)
    assert worker_pids(iq) == []


def test_second_run_exits_3_while_first_is_live(iq: IQ) -> None:
    """One live run per state dir: a second `run` exits 3 naming the live run's pid and start time."""
    run = iq.popen("run", "--prompt", "p", "--task-key", "a")
    try:
        iq.wait_for(lambda: iq.json("status")["alive"])
    except AssertionError:
        pass
    # the first run may finish fast; hold the lock with a long task instead
    run.communicate()
    long = iq.popen("run", iq.tasks_file([{"task_key": "long", "prompt": "p", "mock_sleep": 5}]))
    try:
        iq.wait_for(lambda: iq.json("status")["alive"])
        second = iq("run", "--prompt", "other", "--task-key", "b")
        assert second.returncode == 3
        assert f"pid {long.pid}" in second.stderr and "started" in second.stderr
    finally:
        long.communicate(timeout=60)
