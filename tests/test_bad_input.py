"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import IQ

OPENAI_OFFLINE = """
[providers.openai]
kind = "openai-images"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "OPENAI_API_KEY"
model = "gpt-image-2"
"""


def rejected_reasons(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    doc = orjson.loads(proc.stdout)
    return {r["task_key"]: r["error"] for r in doc["tasks"] if r["status"] == "rejected"}


def test_wrong_types_and_missing_prompt_are_rejected_by_field(iq: IQ) -> None:
    """Wrong types and a missing prompt reject just that task, naming its index and the field."""
    tasks = [{"task_key": "num", "prompt": 123}, {"task_key": "noprompt"}, {"task_key": "blank", "prompt": "  "},
             {"task_key": "meta", "prompt": "p", "metadata": "not an object"}, "just a string",
             {"task_key": "good", "prompt": "p"}]
    proc = iq("run", iq.tasks_file(tasks), "--json")
    assert proc.returncode == 1
    reasons = rejected_reasons(proc)
    assert "task 0" in reasons["num"] and "'prompt'" in reasons["num"]
    assert "task 1" in reasons["noprompt"] and "prompt is required" in reasons["noprompt"]
    assert "prompt is empty" in reasons["blank"]
    assert "'metadata'" in reasons["meta"]
    assert "task 4" in reasons["task[4]"] and "JSON object" in reasons["task[4]"]
    assert orjson.loads(proc.stdout)["tasks"][-1]["status"] == "completed"


@pytest.mark.parametrize("content,expect", [
    (b"", "empty"),
    (b'{"tasks": []}', "empty"),
    (b'{"tasks": {"a": 1}}', "must be a list"),
    (b'{"tasks": [{"prompt": "p"}], "max_wrokers": 2}', "max_wrokers"),
    (b'{"prompt": "caf\xe9"}', "not UTF-8"),
    (b"[1, 2", "line 1"),
])
def test_unusable_tasks_files_exit_2(iq: IQ, content: bytes, expect: str) -> None:
    """An empty, mis-shaped, non-UTF-8 or unparseable tasks file is exit 2 with a reason; nothing runs."""
    path = iq.tmp / "bad.json"
    path.write_bytes(content)
    proc = iq("run", f"@{path}")
    assert proc.returncode == 2
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert not (iq.state / "runs").exists() or not any((iq.state / "runs").iterdir())


def test_missing_tasks_file_and_all_invalid_exit_2(iq: IQ) -> None:
    """A tasks file that does not exist, or whose every task is invalid, is exit 2."""
    missing = iq("run", "@nope.json")
    assert missing.returncode == 2 and "nope.json does not exist" in missing.stderr
    allbad = iq("run", iq.tasks_file([{"promt": "x"}, {"prompt": 5}]))
    assert allbad.returncode == 2


def test_provider_limits_checked_before_any_money_is_spent(iq: IQ) -> None:
    """A prompt over the provider's limit, too many reference images, a missing image file or a
    directory given as an image are rejected at admission with a reason; the provider is never
    contacted (its base_url points at a closed port)."""
    (iq.tmp / "image_queue.toml").write_text(OPENAI_OFFLINE)
    iq.env["OPENAI_API_KEY"] = "sk-offline-test-key-0000"
    ref = iq.tmp / "ref.png"
    ref.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    tasks = [
        {"task_key": "long", "prompt": "x" * 32001},
        {"task_key": "many", "prompt": "p", "images": [str(ref)] * 17},
        {"task_key": "gone", "prompt": "p", "images": [str(iq.tmp / "missing.png")]},
        {"task_key": "dir", "prompt": "p", "images": [str(iq.tmp)]},
        {"task_key": "size", "prompt": "p", "size": "1000x1000"},
    ]
    proc = iq("run", iq.tasks_file({"provider": "openai", "tasks": tasks}), "--json", "--dry-run")
    plan = {p["task_key"]: p for p in orjson.loads(proc.stdout)["plan"]}
    assert all(p["action"] == "reject" for p in plan.values()), plan
    assert "32000" in plan["long"]["reason"] or "32,000" in plan["long"]["reason"]
    assert "16" in plan["many"]["reason"]
    assert "missing.png" in plan["gone"]["reason"]
    assert "multiple of 16" in plan["size"]["reason"] or "16" in plan["size"]["reason"]
    assert proc.returncode == 2


def test_missing_api_key_names_the_variable(iq: IQ) -> None:
    """Asking for a real provider without its key stops before anything runs, naming the variable."""
    proc = iq("run", "--prompt", "p", "--provider", "openai")
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr and "openai" in proc.stderr
    assert "mock" not in iq("list", "--json").stdout  # no fallback to fake images


def test_hostile_task_names_stay_inside_the_output_dir(iq: IQ) -> None:
    """task_names with ../, slashes, NUL or only dots are made safe; nothing is written outside the
    state and output dirs."""
    names = ["../../etc/passwd", "a/b\\c", "nul\x00byte", "...", "/abs/path", "x" * 200]
    tasks = [{"task_key": f"k{i}", "task_name": n, "prompt": "p"} for i, n in enumerate(names)]
    src = iq.tasks_file(tasks)
    before = set(os.listdir(iq.tmp))
    proc = iq("run", src, "--json")
    assert proc.returncode == 0, proc.stderr
    images_dir = (iq.state / "images").resolve()
    for row in orjson.loads(proc.stdout)["tasks"]:
        path = Path(row["image_path"]).resolve()
        assert path.parent == images_dir and path.exists()
        assert "\x00" not in path.name and ".." not in path.name and len(path.name) <= 90
    assert set(os.listdir(iq.tmp)) - before == {"state"}


def test_ten_thousand_tasks_are_admitted_and_rejected_quickly(iq: IQ) -> None:
    """A 10,000-task file: the plan admits 104 and rejects the rest with queue_full, in seconds."""
    tasks = [{"task_key": f"t{i:05d}", "prompt": f"p{i}"} for i in range(10_000)]
    src = iq.tasks_file({"tasks": tasks})
    started = time.monotonic()
    plan = iq.json("run", src, "--dry-run", check=1)["plan"]  # 1: not everything would run
    assert time.monotonic() - started < 15
    assert sum(p["action"] == "run" for p in plan) == 104
    assert sum(p["action"] == "reject" for p in plan) == 9_896
    started = time.monotonic()
    proc = iq("run", src, "--max-workers", "1", "--max-queue-size", "1", "--json", timeout=120)
    assert time.monotonic() - started < 30
    summary = orjson.loads(proc.stdout)["summary"]
    assert (summary["completed"], summary["rejected"]) == (2, 9_998)


@pytest.fixture
def small_mount(tmp_path: Path):
    """A 2 MB tmpfs we can fill or make read-only (needs root; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("needs permission to mount a tmpfs (run as root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _first_run(iq: IQ, state: Path) -> list[dict]:
    iq("run", "--prompt", "first", "--task-key", "first", "--state-dir", str(state), "--json", check=0)
    return iq.json("list", "--state-dir", str(state))["tasks"]


def test_read_only_state_dir_is_a_clear_error_and_state_stays_intact(iq: IQ, small_mount: Path) -> None:
    """A read-only state dir: `run` exits 2 with a clear error; inspection still reads the old state."""
    state = small_mount / "state"
    before = _first_run(iq, state)
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    proc = iq("run", "--prompt", "second", "--task-key", "second", "--state-dir", str(state))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not writable" in proc.stderr or "read-only" in proc.stderr.lower()
    assert iq.json("list", "--state-dir", str(state))["tasks"] == before


def test_full_state_dir_is_a_clear_error_and_state_stays_intact(iq: IQ, small_mount: Path) -> None:
    """A full disk: `run` fails with a clear error instead of a traceback, and earlier records and
    images are intact afterwards."""
    state = small_mount / "state"
    before = _first_run(iq, state)
    filler = small_mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    tasks = [{"task_key": f"big{i}", "prompt": "p", "size": "2048x2048"} for i in range(4)]
    proc = iq("run", iq.tasks_file(tasks), "--state-dir", str(state))
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
    filler.unlink()
    after = {r["task_key"]: r for r in iq.json("list", "--state-dir", str(state), "--limit", "0")["tasks"]}
    assert after["first"] == before[0]
    assert Path(before[0]["image_path"]).exists()
    for path in state.rglob("*.json"):
        orjson.loads(path.read_bytes())
