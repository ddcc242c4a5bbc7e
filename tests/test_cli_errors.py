"""Helpful errors and help: typos get suggestions, missing keys name the variable, every command
has an example, and the inspection commands stay light to start."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import IQ

COMMANDS = ("run", "validate", "status", "list", "get", "history", "cancel", "report")


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_typo_in_a_command_suggests_the_right_one(iq: IQ) -> None:
    """A misspelt command exits 2 with "Did you mean"; a synonym from other tools maps to ours; an
    unknown word lists the commands. Plain text off a terminal (no boxes)."""
    stauts = iq("stauts")
    assert stauts.returncode == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in one_line(stauts.stderr)
    assert "│" not in stauts.stderr and "╭" not in stauts.stderr
    assert "Did you mean 'list'?" in one_line(iq("ls").stderr)
    assert "Did you mean 'report'?" in one_line(iq("gallery").stderr)
    unknown = one_line(iq("frobnicate").stderr)
    assert "No such command 'frobnicate'" in unknown and "Commands: run, validate, status" in unknown


def test_typo_in_a_flag_or_value_suggests_the_right_one(iq: IQ) -> None:
    """A misspelt option names the close one; a misspelt --status value suggests the right status."""
    flag = iq("run", "--prmpt", "x")
    assert flag.returncode == 2 and "No such option: --prmpt" in flag.stderr and "--prompt" in flag.stderr
    value = iq("list", "--status", "faild")
    assert value.returncode == 2 and "did you mean 'failed'?" in value.stderr


def test_missing_api_key_names_the_variable_and_the_provider(iq: IQ) -> None:
    """A run that needs a key that is not set stops before doing anything, with one line naming the
    provider and the environment variable; no traceback, no run recorded."""
    proc = iq("run", "--prompt", "a lighthouse", "--task-key", "l1", "--provider", "openai")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("image_queue: error: provider 'openai' needs an API key: "
                                   "set the environment variable OPENAI_API_KEY")
    assert proc.stdout == ""
    assert not (iq.state / "runs").exists() or not any((iq.state / "runs").iterdir())


def test_get_of_an_unknown_key_lists_near_matches(iq: IQ) -> None:
    """`get` of a key that does not exist names the close keys that do."""
    tasks = [{"task_key": k, "prompt": "p"} for k in ("post-1042-cover", "post-1043-cover", "about-page")]
    iq("run", iq.tasks_file(tasks), "--quiet", check=0)
    proc = iq("get", "post-1042-covr")
    assert proc.returncode == 2
    assert "no task with id or key 'post-1042-covr'" in proc.stderr
    assert "did you mean" in proc.stderr and "post-1042-cover" in proc.stderr
    assert "Traceback" not in proc.stderr
    swapped = iq("get", "psot-1042-cover")  # a typo in the first letters too
    assert "did you mean: post-1042-cover" in swapped.stderr


def test_unknown_run_id_for_report_lists_near_matches(iq: IQ) -> None:
    """`report RUN_ID` with a mistyped run id suggests the run that exists."""
    run_id = iq.json("run", "--prompt", "p", "--task-key", "k")["run_id"]
    proc = iq("report", run_id[:-1] + "x")
    assert proc.returncode == 2 and f"did you mean: {run_id}?" in proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(iq: IQ, command: str) -> None:
    """`COMMAND --help` exits 0, says what the command does and shows at least one example line."""
    proc = iq(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Examples?:", proc.stdout)
    assert re.search(rf"^\s*(cat .*\| )?image_queue {command}\b", proc.stdout, re.M), proc.stdout


def test_inspection_commands_do_not_import_heavy_modules(iq: IQ) -> None:
    """status, list, get and history load neither httpx nor rich, nor our pydantic models/config
    (typer itself brings pydantic; our own imports must not add to start-up)."""
    iq("run", "--prompt", "p", "--task-key", "k", "--quiet", check=0)
    for args in (("status",), ("list",), ("get", "k"), ("history",), ("status", "--json"), ("list", "--json")):
        loaded = set(re.findall(r"\|\s+([\w.]+)\s*$", _importtime(iq, *args), re.M))
        heavy = {m for m in loaded if m.split(".")[0] in ("httpx", "rich")}
        ours = {m for m in loaded if m in ("image_queue.models", "image_queue.config", "image_queue.admission",
                                            "image_queue.http", "image_queue.providers", "image_queue.report")}
        assert not heavy and not ours, (args, heavy, ours)


def _importtime(iq: IQ, *args: str) -> str:
    """The CLI's `-X importtime` report (on stderr) for one command."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "image_queue", *args], cwd=iq.tmp, env=iq.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr
