"""The API key never reaches argv, disk, logs or output — through real workers and a loopback API."""

from __future__ import annotations

import threading
import time
from pathlib import Path


from tests.conftest import IQ, live_processes
from tests.fake_gateway import FakeGateway

KEY = "sk-proj-SeCrEt0123456789abcdefXYZ"


def _config(iq: IQ, gw: FakeGateway) -> None:
    (iq.tmp / "image_queue.toml").write_text(f"""
[defaults]
provider = "openai"

[providers.openai]
kind = "openai-images"
base_url = "{gw.openai_base}"
api_key_env = "OPENAI_API_KEY"
model = "gpt-image-2"
request_timeout_seconds = 10
""")
    iq.env["OPENAI_API_KEY"] = KEY


def _worker_cmdlines(state: Path) -> list[bytes]:
    return [p["cmdline"] for p in live_processes() if str(state).encode() in p["environ"]]


def test_key_never_in_argv_disk_or_output_even_when_upstream_echoes_it(iq: IQ) -> None:
    """Workers get the key from the environment only (their /proc cmdline never has it); an error
    body echoing the Authorization header is scrubbed; no file under the state dir or output dir,
    and no stdout/stderr of any command, contains the key."""
    with FakeGateway(latency=0.6) as gw:
        _config(iq, gw)
        gw.script("generations", {"echo_auth": True, "status": 401})
        tasks = [{"task_key": f"s{i}", "prompt": f"poster {i}"} for i in range(4)]
        seen: list[bytes] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.extend(_worker_cmdlines(iq.state))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            proc = iq("run", iq.tasks_file(tasks), "--max-attempts", "1")
        finally:
            stop.set()
            watcher.join()
        echoed = [c for c in gw.calls("generations") if c.headers.get("authorization") == f"Bearer {KEY}"]
        assert echoed, "the fake gateway should have received the key in the Authorization header"
    assert proc.returncode == 1  # the echoing 401 fails one task
    assert any(b"image_queue" in c for c in seen), "the watcher never saw a worker"
    assert all(KEY.encode() not in c for c in seen)
    outputs = [proc.stdout, proc.stderr]
    for args in (("status",), ("list",), ("history",), ("list", "--json"), ("get", "s0", "--json"),
                 ("get", "s1"), ("get", "s2"), ("get", "s3")):
        p = iq(*args)
        outputs += [p.stdout, p.stderr]
    failed = [r for r in iq.json("list")["tasks"] if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]
    for text in outputs:
        assert KEY not in text and KEY[10:] not in text
    for path in iq.state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and KEY[10:].encode() not in data, path
