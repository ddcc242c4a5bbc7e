"""The read-only commands' fast path (image_queue/cli/fast.py): same answers as the typer app, no pydantic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from image_queue.cli import fast, inspect
from tests.conftest import IQ


def test_parses_the_same_declarations_typer_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Option names, short forms, `--opt=value`, `-n5`, env defaults and function defaults all come
    from the commands' own typer declarations."""
    monkeypatch.delenv("IMAGE_QUEUE_STATE_DIR", raising=False)
    assert fast._parse(inspect.list_command, ["--status", "failed", "-n", "5", "--json"]) == {
        "status": "failed", "run": None, "limit": 5, "json_out": True, "state_dir": Path("state")}
    assert fast._parse(inspect.list_command, ["--limit=0", "-n7"])["limit"] == 7
    assert fast._parse(inspect.history_command, ["--state-dir", "/x"]) == {
        "n": 50, "json_out": False, "state_dir": Path("/x")}
    assert fast._parse(inspect.get_command, ["--tail-bytes", "10", "cover-1"])["id_or_key"] == "cover-1"
    monkeypatch.setenv("IMAGE_QUEUE_STATE_DIR", "/from/env")
    assert fast._parse(inspect.status_command, [])["state_dir"] == Path("/from/env")


@pytest.mark.parametrize("argv", [
    ["status", "--help"], ["list", "-h"], ["list", "--bogus"], ["list", "--limit", "-1"], ["history", "-n", "0"],
    ["list", "--limit", "x"], ["get"], ["get", "a", "b"], ["list", "--status"], ["list", "--json=1"],
    ["list", "--", "x"], ["run", "@tasks.json"], [],
])
def test_anything_unusual_goes_to_the_typer_app(argv: list[str]) -> None:
    """Help, unknown options, bad or missing values and other commands are left to typer (None), so
    their errors and help read as before."""
    assert fast.run(argv) is None


def test_fast_answers_match_the_app_and_skip_pydantic(iq: IQ) -> None:
    """status/list/get/history print the same through the fast path as through typer, and never
    import pydantic or rich."""
    iq("run", iq.tasks_file([{"task_key": f"k{i}", "prompt": "p", "mock_sleep": 0.01} for i in range(3)]),
       "--quiet", check=0)
    via_app = ("import sys; from image_queue.cli import app; "
               "app(prog_name='image_queue', args=sys.argv[1:])")
    for args in (["status"], ["list", "--json"], ["get", "k1"], ["history", "-n", "2"], ["list", "--status", "nope"]):
        fast_run = iq(*args)
        app_run = subprocess.run([sys.executable, "-c", via_app, *args], cwd=iq.tmp, env=iq.env,
                                 capture_output=True, text=True)
        assert (fast_run.returncode, fast_run.stdout, fast_run.stderr) == \
            (app_run.returncode, app_run.stdout, app_run.stderr), args
    probe = ("import runpy, sys; sys.argv = ['image_queue', 'status']\n"
             "try:\n    runpy.run_module('image_queue', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('pydantic', 'rich', 'httpx') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=iq.tmp, env=iq.env, capture_output=True, text=True)
    assert loaded.stdout.strip().splitlines()[-1] == "[]", loaded.stdout + loaded.stderr
