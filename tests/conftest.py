"""Shared fixtures: run the real CLI as a subprocess against a temporary state dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

REPO = Path(__file__).resolve().parents[1]


def live_processes() -> Iterator[dict[str, Any]]:
    """Every live (non-zombie) process we can read: pid, pgid, cmdline and environ (raw bytes)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat", "rb").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            environ = open(f"/proc/{entry}/environ", "rb").read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] != b"Z":
            yield {"pid": int(entry), "pgid": int(fields[2]), "cmdline": cmdline, "environ": environ}


def procs_in_group(pgid: int) -> list[int]:
    """Pids of live processes whose process group is pgid."""
    return [p["pid"] for p in live_processes() if p["pgid"] == pgid]


class IQ:
    """Runs `python -m image_queue ...` with a private state dir and environment."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        self.env["IMAGE_QUEUE_STATE_DIR"] = str(self.state)
        self.env["PYTHONPATH"] = str(REPO)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "image_queue", *args]

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 120, check: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), cwd=self.tmp, env=self.env, input=input.decode() if input else None,
                              capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode} != {check}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        return proc

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=self.tmp, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)

    def json(self, *args: str, check: int | None = 0) -> Any:
        proc = self(*args, "--json", check=check)
        return orjson.loads(proc.stdout)

    def tasks_file(self, tasks: Any, name: str = "tasks.json") -> str:
        path = self.tmp / name
        path.write_bytes(orjson.dumps(tasks))
        return f"@{path}"

    def task_status(self, key: str) -> str | None:
        """The task's status, or None while it is not in the index yet."""
        proc = self("get", key, "--json")
        return orjson.loads(proc.stdout)["task"]["status"] if proc.returncode == 0 else None

    def wait_for(self, predicate: Any, timeout: float = 20, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError("condition not met in time")


@pytest.fixture
def iq(tmp_path: Path) -> IQ:
    return IQ(tmp_path)
