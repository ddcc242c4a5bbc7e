"""Benchmark 3: footprint. Supervisor CPU and peak RSS, idle CPU, and worker peak RSS on a 4K image.

    .venv/bin/python bench/footprint.py [--batch-latency 0.2] [--idle-latency 12] [--repeat 3]

1. Batch: 104 tasks (the most one run admits) against bench/gateway.py at --batch-latency, run
   through bench/_probe.py, which reads getrusage inside the supervisor process after the run:
   supervisor CPU seconds and peak RSS (VmHWM), and the peak RSS of the largest worker.
2. Idle: 4 tasks whose API answers after --idle-latency seconds; the supervisor's own CPU time
   (/proc/<pid>/stat utime+stime) is sampled from 3 s after start until 1 s before the answers,
   while every worker waits on the API. Measured with progress off (--json), with plain progress
   lines (stderr to a file: CI, logs) and with the live display (stdout/stderr on a pseudo-terminal).
3. Big image: 4 tasks whose answer is a 3840x2160 PNG of random pixels (incompressible, so ~25 MB
   of PNG and ~33 MB of base64 JSON, like a real 4K result) as b64_json; peak RSS of the largest
   worker, against the decoded image size. A 64x64 answer gives the worker's baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BENCH, IQ, PYTHON, bench_env, cpu_seconds, gateway, machine, median, out_dir,  # noqa: E402
                     table, write_config)


def tasks_file(work: Path, n: int, name: str) -> str:
    path = work / f"{name}.json"
    path.write_text(json.dumps({"tasks": [{"task_key": f"{name}-{i:03d}", "prompt": f"bench image {name}-{i:03d}",
                                           "size": "1024x1024"} for i in range(n)]}))
    return f"@{path}"


def probed_run(work: Path, base: str, n: int, name: str) -> dict[str, Any]:
    """Run n tasks under bench/_probe.py; return its getrusage record and the wall time."""
    write_config(work, base)
    out = work / f"{name}.probe.json"
    env = {**bench_env(), "BENCH_PROBE_OUT": str(out)}
    argv = [PYTHON, str(BENCH / "_probe.py"), "run", tasks_file(work, n, name), "--state-dir", str(work / f"state-{name}")]
    t = time.perf_counter()
    with open(work / f"{name}.stderr", "w") as err:
        proc = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name}: image_queue run exited {proc.returncode}; see {work / (name + '.stderr')}")
    return {**json.loads(out.read_text()), "wall": wall}


def idle_cpu(work: Path, base: str, latency: float, mode: str, rep: int) -> float:
    """Supervisor CPU % while 4 workers wait on the API."""
    write_config(work, base)
    name = f"idle-{mode}-{rep}"  # a fresh state dir: a second run would just reuse the first one's images
    argv = [*IQ, "run", tasks_file(work, 4, name), "--state-dir", str(work / f"state-{name}")]
    if mode == "json":
        argv.append("--json")
    env = bench_env()
    master = None
    if mode == "tty":
        master, slave = pty.openpty()
        env["TERM"] = "xterm-256color"
        proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        threading.Thread(target=_drain, args=(master,), daemon=True).start()
    else:
        with open(work / f"{name}.stderr", "w") as err:
            proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
    time.sleep(3.0)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(latency - 4.0)
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    still_waiting = proc.poll() is None
    proc.wait(timeout=120)
    if proc.returncode != 0 or not still_waiting:
        raise SystemExit(f"idle run ({mode}) exited {proc.returncode} before the window ended")
    assert c0 is not None and c1 is not None
    return 100 * (c1 - c0) / (t1 - t0)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-latency", type=float, default=0.2)
    ap.add_argument("--idle-latency", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = out_dir("footprint")
    print(f"# footprint: {machine()}")

    batch = []
    with gateway(args.batch_latency) as base:
        for rep in range(args.repeat):
            batch.append(probed_run(work, base, 104, f"batch{rep}"))
    rows = [[rep, f"{b['wall']:.2f}", f"{b['self']['cpu_user_s'] + b['self']['cpu_sys_s']:.2f}",
             f"{b['self']['cpu_user_s']:.2f} / {b['self']['cpu_sys_s']:.2f}", f"{b['vmhwm_kb'] / 1024:.1f}",
             f"{b['children']['maxrss_kb'] / 1024:.1f}"] for rep, b in enumerate(batch)]
    print(f"\n## 104 tasks, {args.batch_latency} s API latency, 4 workers (target: supervisor RSS ≤ 80 MB)\n")
    print(table(["rep", "wall s", "supervisor CPU s", "user / sys s", "supervisor peak RSS MB",
                 "largest worker peak RSS MB"], rows))

    print(f"\n## supervisor CPU while 4 workers wait {args.idle_latency:g} s on the API (target ≤ 1%)\n")
    rows = []
    with gateway(args.idle_latency) as base:
        for mode in ("json", "plain", "tty"):
            vals = [idle_cpu(work, base, args.idle_latency, mode, rep) for rep in range(max(1, args.repeat - 1))]
            rows.append([{"json": "--json (no progress)", "plain": "progress lines (stderr to a file)",
                          "tty": "live display (pseudo-terminal)"}[mode],
                         f"{median(vals):.2f}", " ".join(f"{v:.2f}" for v in vals)])
    print(table(["output", "CPU % (median)", "each run"], rows))

    print("\n## worker peak RSS, answer = one PNG as b64_json (target ≤ 4× the decoded image)\n")
    rows = []
    for label, image, noise in (("64x64 (baseline)", "64x64", False), ("3840x2160 noise", "3840x2160", True)):
        with gateway(0.5, image=image, noise=noise) as base:
            banner = _banner(base)
            runs = [probed_run(work, base, 4, f"img-{image}-{rep}") for rep in range(max(1, args.repeat - 1))]
        peak = median([r["children"]["maxrss_kb"] / 1024 for r in runs])
        size = banner["image_bytes"] / 1e6 / 1.048576
        rows.append([label, f"{size:.2f}", f"{banner['answer_bytes'] / 1e6 / 1.048576:.1f}", f"{peak:.1f}",
                     f"{peak / size:.2f}×" if noise else "-"])
    print(table(["image", "decoded MiB", "answer MiB", "worker peak RSS MiB (median)", "peak / decoded"], rows))
    print(f"\n(work dir: {work})")


def _banner(base: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(base + "/_info", timeout=10) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    main()
