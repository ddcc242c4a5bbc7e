"""What `run` shows while it works: plain event lines off a terminal, a live display on one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import orjson

from tests.conftest import IQ

EVENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (started|finished|retry|timeout|cancelled)\s+(\S+)")

# The line image_queue.http appends to attempts.jsonl when an attempt failed and will be retried.
RETRY_LINE = orjson.dumps({"attempt": 1, "method": "POST", "stage": "generate", "status": 429,
                           "error": "Rate limit reached", "category": "rate_limited", "billable": True,
                           "retry_in_seconds": 0.5}).decode()
RETRY_COMMAND = f"echo '{RETRY_LINE}' >> \"$IMAGE_QUEUE_TASK_DIR/attempts.jsonl\"; sleep 1.5"


def run_on_terminal(iq: IQ, *args: str, stdout_tty: bool = True, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI with stderr (and stdout, unless stdout_tty is False) on a pseudo-terminal of 120x40.

    Returns (exit code, what the terminal showed, stdout when it was a pipe)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**iq.env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(iq.argv(*args), cwd=iq.tmp, env=env, stdin=slave, stderr=slave,
                            stdout=slave if stdout_tty else subprocess.PIPE)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=10)
    os.close(master)
    return code, screen.decode("utf-8", "replace"), out


def status_of(iq: IQ, key: str) -> str | None:
    proc = iq("get", key, "--json")
    return orjson.loads(proc.stdout)["task"]["status"] if proc.returncode == 0 else None


def events(stderr: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for line in stderr.splitlines() if (m := EVENT.match(line))]


def test_plain_events_are_timestamped_lines_on_stderr(iq: IQ) -> None:
    """Off a terminal, run prints one timestamped line per started, finished, retry, timeout and
    cancelled event on stderr (stdout keeps only the summary), and no terminal control codes."""
    tasks = [
        {"task_key": "retried", "prompt": "p", "mock_command": RETRY_COMMAND},
        {"task_key": "slow", "prompt": "p", "mock_command": "sleep 30"},
        # their own timeout, so a slow machine cannot time them out (and start "never") before the SIGINT
        {"task_key": "long-a", "prompt": "p", "mock_sleep": 30, "task_timeout_seconds": 60},
        {"task_key": "long-b", "prompt": "p", "mock_sleep": 30, "task_timeout_seconds": 60},
        {"task_key": "never", "prompt": "p"},
    ]
    run = iq.popen("run", iq.tasks_file(tasks), "--max-workers", "2", "--task-timeout-seconds", "3",
                   "--kill-grace-seconds", "0.5")
    try:
        iq.wait_for(lambda: status_of(iq, "slow") == "timed_out", timeout=30)
        iq.wait_for(lambda: status_of(iq, "long-b") == "running")
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, err
    seen = events(err)
    assert ("retry", "retried") in seen
    assert ("finished", "retried") in seen
    assert ("timeout", "slow") in seen
    assert ("finished", "slow") in seen
    assert ("cancelled", "never") in seen  # queued when the run was interrupted
    assert seen[0] == ("started", "retried")
    retry_line = next(line for line in err.splitlines() if " retry " in line)
    assert "attempt 2" in retry_line and "429" in retry_line and "rate_limited" in retry_line
    finished_slow = next(line for line in err.splitlines() if re.search(r" finished\s+slow ", line))
    assert "timed_out" in finished_slow and "time limit" in finished_slow  # the human reason, not just a code
    assert "\x1b[" not in err + out
    assert out.startswith("run ") and "interrupted" in out.splitlines()[0]
    assert not EVENT.search(out)


def test_quiet_prints_only_the_summary(iq: IQ) -> None:
    """--quiet prints nothing while running (not even rejected tasks) and only the summary at the end."""
    tasks = [{"task_key": "a", "prompt": "p"}, {"task_key": "b", "promt": "typo"}]
    proc = iq("run", iq.tasks_file(tasks), "--quiet")
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert proc.stdout.startswith("run ") and "NOT ok" in proc.stdout
    assert "rejected" in proc.stdout and "unknown field 'promt'" in proc.stdout


def test_live_display_on_a_terminal(iq: IQ) -> None:
    """On a terminal, run draws a live display (a line per worker slot with task_key, elapsed, attempt
    and status; totals; throughput; ETA) and ends with a summary table; a retry shows as attempt 2."""
    tasks = [{"task_key": f"cover-{i:02d}", "prompt": "p", "mock_sleep": 1.2} for i in range(5)]
    tasks.append({"task_key": "retried", "prompt": "p", "mock_command": RETRY_COMMAND})
    code, screen, _ = run_on_terminal(iq, "run", iq.tasks_file(tasks), "--max-workers", "3")
    assert code == 0, screen
    for text in ("SLOT", "TASK_KEY", "ELAPSED", "ATTEMPT", "STATUS", "images/min", "ETA", "running", "queued"):
        assert text in screen, text
    assert re.search(r"retry in [\d.]+s \(rate_limited\)", screen)
    assert "\x1b[" in screen  # drawn with cursor movement, not printed line by line
    assert not events(screen)  # the plain log format is for non-terminals only
    assert "✓" in screen and "completed in" in screen  # finished tasks scroll above the display
    tail = screen[screen.rindex("6 tasks, all ok") - 200:]
    assert "STATUS" in tail and "TASKS" in tail and "completed" in tail and "gallery:" in tail


def test_json_on_a_terminal_keeps_stdout_clean(iq: IQ) -> None:
    """With --json and stderr on a terminal, the live display goes to the terminal and stdout holds
    exactly batch_result.json, even when tasks are rejected and fail."""
    tasks = [{"task_key": "ok", "prompt": "p", "mock_sleep": 0.8}, {"task_key": "bad", "promt": "x"},
             {"task_key": "crash", "prompt": "p", "mock_exit_code": 3}]
    code, screen, out = run_on_terminal(iq, "run", iq.tasks_file(tasks), "--json", stdout_tty=False)
    assert code == 1
    doc = orjson.loads(out)
    assert [r["status"] for r in doc["tasks"]] == ["completed", "rejected", "failed"]
    assert "SLOT" in screen and "rejected" in screen
    assert out.lstrip().startswith("{") and out.rstrip().endswith("}")


def test_a_real_http_retry_is_reported(iq: IQ) -> None:
    """A 429 from a real (loopback) image API followed by success shows as a `retry` line naming the
    attempt, the HTTP status and the category, before the task's `finished` line."""
    from tests.fake_gateway import FakeGateway, error

    with FakeGateway() as gw:
        (iq.tmp / "image_queue.toml").write_text(
            f'[providers.oa]\nkind = "openai-images"\nbase_url = "{gw.openai_base}"\napi_key_env = "PROGRESS_KEY"\n')
        iq.env["PROGRESS_KEY"] = "sk-progress-0123456789abcdef"
        gw.script("generations", error(429, "rate_limit_exceeded", "Slow down", headers={"retry-after-ms": "50"}))
        proc = iq("run", "--prompt", "a lighthouse", "--task-key", "lh", "--provider", "oa")
    assert proc.returncode == 0, proc.stderr
    seen = events(proc.stderr)
    assert seen == [("started", "lh"), ("retry", "lh"), ("finished", "lh")]
    retry = next(line for line in proc.stderr.splitlines() if " retry " in line)
    assert "attempt 2" in retry and "HTTP 429" in retry and "rate_limited" in retry


def test_a_closed_stderr_does_not_stop_the_run(iq: IQ) -> None:
    """When nobody reads stderr any more (`run ... 2>&1 | head -1`), the progress lines stop but the
    run still finishes every task and writes its summary."""
    tasks = [{"task_key": f"t{i}", "prompt": "p", "mock_sleep": 0.2} for i in range(4)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stderr now fails with EPIPE
    try:
        proc = subprocess.run(iq.argv("run", iq.tasks_file(tasks), "--max-workers", "2"), cwd=iq.tmp, env=iq.env,
                              stdout=subprocess.PIPE, stderr=write_end, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert "4 tasks, all ok" in proc.stdout
    assert {r["status"] for r in iq.json("list")["tasks"]} == {"completed"}
