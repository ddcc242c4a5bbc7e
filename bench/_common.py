"""Helpers shared by the benchmark scripts: the gateway process, statistics, tables, the machine."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
PYTHON = sys.executable  # run the benchmarks with the project's venv python
IQ = [PYTHON, "-m", "image_queue"]
DUMMY_KEY_ENV = "BENCH_DUMMY_API_KEY"


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2 if n else math.nan


def pct(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] if s else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def machine() -> str:
    model = "?"
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    load = os.getloadavg()[0]
    return (f"nproc {os.cpu_count()}, CPU {model}, Python {platform.python_version()}, "
            f"Linux {platform.release()}, load avg (1 min) at start {load:.2f}")


def out_dir(name: str) -> Path:
    d = OUT / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def gateway(latency: float, image: str = "64x64", noise: bool = False) -> Iterator[str]:
    """Start bench/gateway.py as its own process; yield its base URL (no /v1)."""
    argv = [PYTHON, str(BENCH / "gateway.py"), "--port", "0", "--latency", str(latency), "--image", image]
    proc = subprocess.Popen(argv + (["--noise"] if noise else []), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"listening on (\S+)", line)
        if not m:
            raise RuntimeError(f"gateway did not start: {line!r}")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def gateway_calls(base: str) -> list[dict[str, Any]]:
    import json

    with urllib.request.urlopen(base + "/_calls", timeout=30) as r:
        return json.loads(r.read())


def gateway_reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(base + "/_reset", data=b"{}", method="POST"), timeout=30).read()


def write_config(directory: Path, base: str) -> Path:
    """An image_queue.toml with one openai-images provider pointed at the gateway."""
    path = directory / "image_queue.toml"
    path.write_text(
        '[defaults]\nprovider = "gw"\n\n[providers.gw]\nkind = "openai-images"\n'
        f'base_url = "{base}/v1"\napi_key_env = "{DUMMY_KEY_ENV}"\nmodel = "gpt-image-2"\n'
        "request_timeout_seconds = 120\n"
    )
    return path


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("IMAGE_QUEUE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a normal install has bytecode; see RESULTS.md
    env[DUMMY_KEY_ENV] = "sk-bench-dummy-0000"
    env.pop("http_proxy", None), env.pop("HTTP_PROXY", None), env.pop("all_proxy", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process itself (not its children), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
