"""Tier-1 OpenAI pacing: 20 tasks, 4 workers, images_per_minute = 5, against a loopback
OpenAI-compatible API that allows 5 images per 60 s and answers 429 beyond that.

    .venv/bin/python bench/tier1_rate_limit.py [--tasks 20] [--window 60]

Prints a table: completed, failed, 429 answers seen by the API, wall time, and the ideal wall time
((tasks - 1) * window / 5). Takes about 4 minutes at the real 60 s window.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ratelimited_gateway import RateLimitedGateway  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--window", type=float, default=60.0, help="the API's window in seconds (default 60)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RateLimitedGateway(limit=5, window=args.window, latency=1.0) as gw:
        tmpdir = Path(tmp)
        (tmpdir / "image_queue.toml").write_text(
            f'[providers.tier1]\nkind = "openai-images"\nbase_url = "{gw.base_url}"\n'
            f'api_key_env = "TIER1_API_KEY"\nmodel = "gpt-image-2"\nimages_per_minute = 5\n'
            f"rate_window_seconds = {args.window}\n")
        tasks = [{"task_key": f"cover-{i:02d}", "prompt": f"cover {i}"} for i in range(args.tasks)]
        (tmpdir / "tasks.json").write_bytes(orjson.dumps({"provider": "tier1", "tasks": tasks}))
        env = {**os.environ, "TIER1_API_KEY": "sk-bench-not-a-real-key", "IMAGE_QUEUE_STATE_DIR": str(tmpdir / "state")}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "image_queue", "run", "@tasks.json", "--json", "--max-attempts", "1"],
                              cwd=tmpdir, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        doc = orjson.loads(proc.stdout)
        s = doc["summary"]
        n429 = sum(1 for e in gw.log if e["status"] == 429)
        ideal = (args.tasks - 1) * args.window / 5
        print(f"{'tasks':>6} {'completed':>9} {'failed':>6} {'429s':>5} {'wall_s':>8} {'ideal_s':>8}")
        print(f"{args.tasks:>6} {s['completed']:>9} {s['failed']:>6} {n429:>5} {wall:>8.1f} {ideal:>8.1f}")
        sys.exit(0 if s["ok"] and n429 == 0 else 1)


if __name__ == "__main__":
    main()
