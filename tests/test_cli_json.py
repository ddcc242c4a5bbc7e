"""The --json contract of every inspection command: a versioned envelope, and nothing else on stdout."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import IQ

TASKS = [
    {"task_key": "good", "prompt": "a <b>bold</b> \"quoted\" prompt", "metadata": {"post_id": 7}},
    {"task_key": "crash", "prompt": "p", "mock_exit_code": 3, "mock_output_text": "noise on stdout"},
    {"task_key": "typo", "promt": "p"},
    {"task_key": "good", "prompt": "duplicate"},
]


@pytest.fixture
def finished_run(iq: IQ) -> IQ:
    iq("run", iq.tasks_file(TASKS), "--quiet", check=1)
    return iq


def only_json(proc: object) -> dict:
    """stdout parses as exactly one JSON object with the versioned envelope."""
    out = proc.stdout  # type: ignore[attr-defined]
    doc = orjson.loads(out)  # raises if anything else was printed around the document
    assert isinstance(doc, dict) and doc["schema_version"] == 1, doc
    return doc


def test_every_inspection_command_has_a_versioned_json_shape(finished_run: IQ) -> None:
    """status, list, get, history, validate, run --dry-run and report print one JSON document with
    schema_version and kind, and the fields scripts rely on."""
    iq = finished_run
    status = only_json(iq("status", "--json", check=0))
    assert status["kind"] == "status" and status["alive"] is False
    assert status["run"]["counts"]["completed"] == 1 and status["run"]["running"] == []

    listed = only_json(iq("list", "--json", check=0))
    assert listed["kind"] == "list" and listed["count"] == 4
    assert set(listed["tasks"][0]) >= {"task_id", "run_id", "task_key", "status", "image_path", "error"}
    assert all(set(r) == set(listed["tasks"][0]) for r in listed["tasks"])  # one row shape for every status

    got = only_json(iq("get", "crash", "--json", check=0))
    assert got["kind"] == "task" and got["task"]["status"] == "failed"
    assert got["result"]["diagnosis"]["category"] == "worker_crash"
    assert "noise on stdout" in got["stdout_tail"]

    history = only_json(iq("history", "--json", check=0))
    assert history["kind"] == "history" and history["count"] == 4

    plan = only_json(iq("validate", iq.tasks_file(TASKS), "--json", check=1))
    assert plan["kind"] == "plan" and plan["dry_run"] is True
    assert [r["action"] for r in plan["plan"]] == ["reuse", "run", "reject", "skip"]
    assert plan["summary"] == {"total": 4, "run": 1, "reuse": 1, "skip": 1, "reject": 1, "ok": False}
    dry = only_json(iq("run", iq.tasks_file(TASKS), "--dry-run", "--json", check=1))
    assert dry == plan

    report = only_json(iq("report", "--json", check=0))
    assert report["kind"] == "report" and report["images"] == 1 and report["url"].startswith("file://")


def test_nothing_but_json_on_stdout_when_things_go_wrong(iq: IQ) -> None:
    """Rejected and failing tasks, worker noise, and a missing API key warning go to stderr or the
    task's files, never into --json stdout."""
    proc = iq("run", iq.tasks_file(TASKS), "--json")
    assert proc.returncode == 1
    doc = orjson.loads(proc.stdout)  # batch_result.json itself (CONTRACT.md §7)
    assert [r["status"] for r in doc["tasks"]] == ["completed", "failed", "rejected", "skipped"]
    assert "noise on stdout" not in proc.stdout

    keyless = iq("validate", iq.tasks_file([{"task_key": "real", "prompt": "p"}], "real.json"),
                 "--provider", "openai", "--json")
    assert keyless.returncode == 0
    plan = only_json(keyless)
    assert plan["missing_keys"][0]["api_key_env"] == "OPENAI_API_KEY"
    assert "OPENAI_API_KEY" in keyless.stderr and "warning" in keyless.stderr

    # An error is one line on stderr and an empty stdout: a script never parses half a document.
    missing = iq("get", "no-such-task", "--json")
    assert missing.returncode == 2 and missing.stdout == "" and "no-such-task" in missing.stderr


def test_json_on_an_empty_state_dir(iq: IQ) -> None:
    """Before any run, status/list/history answer with empty but well-formed documents."""
    assert only_json(iq("status", "--json", check=0))["run"] is None
    assert only_json(iq("list", "--json", check=0))["tasks"] == []
    assert only_json(iq("history", "--json", check=0))["tasks"] == []
    assert not iq.state.exists()  # looking did not create anything
