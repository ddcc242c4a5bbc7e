"""`validate` (= `run --dry-run`): the admission plan as a table, without running or writing anything."""

from __future__ import annotations

from tests.conftest import IQ


def test_validate_shows_the_plan_and_writes_nothing(iq: IQ) -> None:
    """validate prints one row per task (action, key, provider, reason) and a totals line, is
    byte-for-byte what run --dry-run prints, contacts nobody and creates no state dir."""
    tasks = [{"task_key": "a", "prompt": "p", "size": "1536x1024"}, {"task_key": "b", "promt": "typo"},
             {"task_key": "a", "prompt": "again"}]
    ref = iq.tasks_file(tasks)
    proc = iq("validate", ref)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["#", "ACTION", "TASK_KEY", "PROVIDER", "MODEL", "SIZE", "REASON"]
    assert lines[1].split()[:6] == ["0", "run", "a", "mock", "mock-image-1", "1536x1024"]
    assert lines[2].split()[:3] == ["1", "reject", "b"] and "unknown field 'promt'" in lines[2]
    assert lines[3].split()[:3] == ["2", "skip", "a"] and "duplicate task_key" in lines[3]
    assert lines[4] == "plan: 1 to run, 0 reused, 1 skipped, 1 rejected of 3; capacity 104 per run"
    assert iq("run", ref, "--dry-run").stdout == proc.stdout
    assert not iq.state.exists()


def test_validate_exit_status_is_what_run_would_exit_with(iq: IQ) -> None:
    """0 when every task would run or be reused, 1 when some would not, 2 when none would run or the
    file is unusable (with its path, line and column)."""
    assert iq("validate", iq.tasks_file([{"task_key": "x", "prompt": "p"}], "ok.json")).returncode == 0
    assert iq("validate", iq.tasks_file([{"promt": "p"}], "none.json")).returncode == 2
    (iq.tmp / "broken.json").write_text('[{"prompt": "a",}]')
    broken = iq("validate", f"@{iq.tmp / 'broken.json'}")
    assert broken.returncode == 2 and "broken.json" in broken.stderr and "line 1, column" in broken.stderr
    iq("run", iq.tasks_file([{"task_key": "x", "prompt": "p"}], "ok.json"), "--quiet", check=0)
    reuse = iq("validate", iq.tasks_file([{"task_key": "x", "prompt": "p"}], "ok.json"))
    assert reuse.returncode == 0 and "completed earlier by task" in reuse.stdout


def test_validate_warns_about_a_missing_key_without_failing(iq: IQ) -> None:
    """A provider whose key is not set is a warning naming the variable (the file itself is fine)."""
    proc = iq("validate", iq.tasks_file([{"task_key": "x", "prompt": "p"}]), "--provider", "openai")
    assert proc.returncode == 0
    assert "OPENAI_API_KEY" in proc.stderr and "openai" in proc.stderr
    assert "gpt-image-2" in proc.stdout
