"""Provider rate limits shared by every worker of a state dir.

Two rules, kept per provider in `<state>/ratelimit/<provider>.json` under a filelock:
- a cool-down: when any worker gets a 429 with a retry hint (or a backoff), every worker of that
  provider waits until it has passed before its next billable request;
- `images_per_minute`: requests are spaced `window / images_per_minute` apart across all workers.
  The first request goes at once and the rest follow at that pace, so a batch never opens with a
  full minute's burst (the way tier-1 OpenAI accounts, at 5 images a minute, get 429s).
Plugged into http.py through its `set_rate_limit_hooks` seam by the worker.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import orjson
from filelock import FileLock

from image_queue.store import atomic_write_bytes

# Space requests so that any `ipm + 1` consecutive ones span the window plus a margin: 1% and 0.1 s
# shared by the ipm intervals, which absorbs the jitter between our clock and the request's arrival.
SAFETY, SLACK_SECONDS = 1.01, 0.1


class SharedRateLimiter:
    def __init__(self, state_dir: str | os.PathLike[str], *, images_per_minute: dict[str, float | None],
                 window_seconds: dict[str, float] | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(state_dir) / "ratelimit"
        self.ipm = images_per_minute
        self.window = window_seconds or {}
        self.sleep, self.clock = sleep, clock
        self.waited = 0.0  # seconds this process spent waiting, for the attempt journal

    def _paths(self, provider: str) -> tuple[Path, FileLock]:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", provider) or "provider"
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{name}.json"
        return path, FileLock(str(path) + ".lock")

    @staticmethod
    def _read(path: Path) -> dict[str, float]:
        try:
            return orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}

    def before_request(self, provider: str) -> None:
        """Block until this provider may be called again, then claim the next slot."""
        path, lock = self._paths(provider)
        ipm = self.ipm.get(provider)
        interval = ((self.window.get(provider, 60.0) * SAFETY + SLACK_SECONDS) / ipm) if ipm else 0.0
        claimed = False
        while True:
            with lock:
                state = self._read(path)
                now = self.clock()
                blocked = state.get("blocked_until", 0.0)
                if blocked > now:
                    wait = blocked - now
                elif interval and not claimed:
                    grant = max(now, state.get("next_slot", 0.0))
                    state["next_slot"] = grant + interval
                    atomic_write_bytes(path, orjson.dumps(state), fsync=False)
                    claimed, wait = True, grant - now
                else:
                    return
            if wait > 0:  # then look again: a cool-down may have begun while we waited
                self.waited += wait
                self.sleep(wait)

    def on_rate_limited(self, provider: str, delay: float) -> None:
        """Make every worker of this provider hold off for `delay` seconds from now."""
        path, lock = self._paths(provider)
        with lock:
            state = self._read(path)
            state["blocked_until"] = max(state.get("blocked_until", 0.0), self.clock() + max(0.0, delay))
            atomic_write_bytes(path, orjson.dumps(state), fsync=False)
