"""Rate limits shared across workers, through real worker processes and a loopback API."""

from __future__ import annotations

import orjson

from tests.conftest import IQ
from tests.ratelimited_gateway import RateLimitedGateway


def _config(iq: IQ, base_url: str, extra: str = "") -> None:
    (iq.tmp / "image_queue.toml").write_text(f"""
[defaults]
provider = "limited"

[providers.limited]
kind = "openai-images"
base_url = "{base_url}"
api_key_env = "LIMITED_API_KEY"
model = "gpt-image-2"
request_timeout_seconds = 10
{extra}
""")
    iq.env["LIMITED_API_KEY"] = "sk-limited-test-key-123456"


def test_images_per_minute_is_enforced_across_all_workers(iq: IQ) -> None:
    """20 tasks, 4 workers, images_per_minute = 5 against an API that allows 5 per window: the
    shared pacing means zero 429s and every task completes (the window is scaled to 2 s for the
    test; bench/tier1_rate_limit.py runs the real 60 s one)."""
    with RateLimitedGateway(limit=5, window=2.0, latency=0.05) as gw:
        _config(iq, gw.base_url, "images_per_minute = 5\nrate_window_seconds = 2")
        tasks = [{"task_key": f"r{i:02d}", "prompt": f"poster {i}"} for i in range(20)]
        proc = iq("run", iq.tasks_file(tasks), "--json", "--max-attempts", "1", timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert orjson.loads(proc.stdout)["summary"]["completed"] == 20
        assert [e for e in gw.log if e["status"] == 429] == []
        times = sorted(e["t"] for e in gw.log)
        assert times[-1] - times[0] >= 19 * 2.0 / 5 * 0.95  # paced, not bursted


def test_a_429_hint_makes_every_worker_of_the_provider_wait(iq: IQ) -> None:
    """When one worker gets 429 with retry-after-ms, no worker of that provider sends another
    request until the hint has passed."""
    with RateLimitedGateway(limit=1000, window=60.0, latency=0.2, first_429_ms=1500) as gw:
        _config(iq, gw.base_url)
        tasks = [{"task_key": f"h{i}", "prompt": f"poster {i}"} for i in range(8)]
        proc = iq("run", iq.tasks_file(tasks), "--json", timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        first_429 = next(e["t"] for e in gw.log if e["status"] == 429)
        later = [e["t"] for e in gw.log if e["t"] > first_429 + 0.05]
        assert later and min(later) >= first_429 + 1.5 - 0.05
        journal = [orjson.loads(line) for d in (iq.state / "tasks").iterdir()
                   for line in (d / "attempts.jsonl").read_bytes().splitlines()]
        assert sum(1 for a in journal if a.get("status") == 429) == 1
