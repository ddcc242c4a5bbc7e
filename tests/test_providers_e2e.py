"""Every provider kind through `image_queue run` as a user runs it: config file, env key, real
worker processes, a loopback gateway speaking each protocol, and the proof left on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from tests.conftest import IQ
from tests.fake_gateway import FakeGateway, error

KEY = "sk-e2e-0123456789abcdefghij"


def _config(iq: IQ, gw: FakeGateway) -> None:
    (iq.tmp / "image_queue.toml").write_text(f"""
[providers.oa]
kind = "openai-images"
base_url = "{gw.openai_base}"
api_key_env = "E2E_KEY"
model = "gpt-image-2"
request_timeout_seconds = 10

[providers.resp]
kind = "openai-responses"
base_url = "{gw.openai_base}"
api_key_env = "E2E_KEY"
model = "gpt-5.4"
stream = true

[providers.i2]
kind = "image2"
base_url = "{gw.base_url}"
api_key_env = "E2E_KEY"
poll_interval_seconds = 0.05

[providers.ra]
kind = "runapi"
base_url = "{gw.base_url}"
api_key_env = "E2E_KEY"
poll_interval_seconds = 0.05
""")
    iq.env["E2E_KEY"] = KEY


def _result(iq: IQ, key: str) -> dict:
    got = iq.json("get", key)
    return orjson.loads(Path(got["paths"]["result.json"]).read_bytes())


@pytest.mark.parametrize("provider,route", [("oa", "generations"), ("resp", "responses"),
                                            ("i2", "image2.create"), ("ra", "runapi.create")])
def test_each_provider_generates_a_real_image_with_proof(iq: IQ, provider: str, route: str) -> None:
    """A text-to-image task on each provider kind completes; result.json proves what was made
    (provider, model, mode, bytes, sha256 of the file on disk) and attempts.jsonl records the calls."""
    with FakeGateway() as gw:
        _config(iq, gw)
        size = "16:9" if provider in ("i2", "ra") else "1536x1024"
        proc = iq("run", "--prompt", "a lighthouse at dusk", "--task-key", "lh", "--provider", provider,
                  "--size", size, "--json")
        assert proc.returncode == 0, proc.stderr
        assert len(gw.calls(route)) == 1
    result = _result(iq, "lh")
    image = Path(result["image_path"])
    assert result["provider"] == provider and result["mode"] == "generation" and result["ok"] is True
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.suffix == ".png"
    assert result["bytes"] == image.stat().st_size
    assert result["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    journal = Path(iq.json("get", "lh")["paths"]["attempts.jsonl"]).read_text()
    assert journal.count("\n") >= 1 and KEY not in journal


def test_openai_edit_uploads_reference_images_as_multipart(iq: IQ) -> None:
    """Reference images make it an edit: local files go up as repeated image[] parts; the mode and
    inputs are recorded in result.json."""
    refs = []
    for i in range(2):
        ref = iq.tmp / f"ref{i}.png"
        ref.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]) * 64)
        refs.append(str(ref))
    with FakeGateway() as gw:
        _config(iq, gw)
        tasks = [{"task_key": "ed", "prompt": "put the mug on a beach", "provider": "oa", "images": refs}]
        assert iq("run", iq.tasks_file(tasks)).returncode == 0
        call = gw.calls("edits")[0]
        assert [f[0] for f in call.files["image[]"]] == ["ref0.png", "ref1.png"]
        assert call.form["prompt"] == ["put the mug on a beach"] and "moderation" not in call.form
    result = _result(iq, "ed")
    assert result["mode"] == "edit" and result["input_images"] == refs


def test_jpeg_answer_is_saved_with_jpg_extension(iq: IQ) -> None:
    """The file extension follows the image's real format (sniffed), not an assumption."""
    with FakeGateway() as gw:
        _config(iq, gw)
        gw.script("generations", {"mode": "jpeg"})
        assert iq("run", "--prompt", "p", "--task-key", "j", "--provider", "oa").returncode == 0
    assert _result(iq, "j")["image_path"].endswith(".jpg")


def test_failures_are_diagnosed_for_people(iq: IQ) -> None:
    """Moderation blocks and exhausted quota fail without retries, with a category and a sentence an
    editor understands; a 500 then success is retried and completes."""
    with FakeGateway() as gw:
        _config(iq, gw)
        gw.script("generations", error(400, "moderation_blocked", type="image_generation_user_error"))
        blocked = iq("run", "--prompt", "p", "--task-key", "mod", "--provider", "oa")
        gw.script("generations", error(429, "insufficient_quota"))
        quota = iq("run", "--prompt", "p", "--task-key", "quota", "--provider", "oa")
        gw.script("generations", error(500, "server_error"))
        flaky = iq("run", "--prompt", "p", "--task-key", "flaky", "--provider", "oa")
        assert len(gw.calls("generations")) == 4  # 1 + 1 + (500, then success)
    assert (blocked.returncode, quota.returncode, flaky.returncode) == (1, 1, 0)
    mod, q = _result(iq, "mod"), _result(iq, "quota")
    assert mod["diagnosis"]["category"] == "moderation_blocked" and mod["http_status"] == 400
    assert q["diagnosis"]["category"] == "quota_exhausted" and not q["diagnosis"]["retryable"]
    assert "safety" in mod["diagnosis"]["human_reason"]
    assert _result(iq, "flaky")["attempts"] == 2


def test_async_gateway_create_is_never_retried(iq: IQ) -> None:
    """An image2 create that fails with 500 is not retried automatically (each create costs credits)."""
    with FakeGateway() as gw:
        _config(iq, gw)
        gw.script("image2.create", error(500, "server_error"))
        proc = iq("run", "--prompt", "p", "--task-key", "once", "--provider", "i2", "--max-attempts", "5")
        assert proc.returncode == 1
        assert len(gw.calls("image2.create")) == 1
    assert _result(iq, "once")["diagnosis"]["category"] == "upstream_failure"


def test_dry_run_contacts_nothing_and_writes_nothing(iq: IQ) -> None:
    """`run --dry-run` shows run / reuse / skip / reject per task with reasons, sends no request and
    creates no state."""
    with FakeGateway() as gw:
        _config(iq, gw)
        tasks = [{"task_key": "a", "prompt": "p"}, {"task_key": "a", "prompt": "p"}, {"task_key": "b", "promt": "p"}]
        doc = iq.json("run", iq.tasks_file({"provider": "oa", "tasks": tasks}), "--dry-run", check=1)
        assert gw.calls() == []
    assert [p["action"] for p in doc["plan"]] == ["run", "skip", "reject"]
    assert all(p["reason"] for p in doc["plan"][1:])
    assert not iq.state.exists()
