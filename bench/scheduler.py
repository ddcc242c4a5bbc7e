"""Benchmark 1: scheduler efficiency end to end over real HTTP, against GNU parallel + curl.

    .venv/bin/python bench/scheduler.py [--tasks 100] [--latency 1.0] [--workers 4] [--repeat 3]

Starts bench/gateway.py on 127.0.0.1 (each image answered after a fixed latency L), then runs the
same N tasks R times each way, alternating: `image_queue run` with an `openai-images` provider
pointed at the gateway, and `parallel -jW curl ...`. Ideal wall = ceil(N/W)·L.

Slot gap (image_queue): on each slot (worker ids `slotI-n` in the index), the time from one worker's
exit (its task's `finished_at`, stamped by the supervisor when the worker's pidfd fires) to the
next worker's request arriving at the gateway (the prompt carries the task key, which pairs gateway
requests with index rows). The table also splits that gap into supervisor hand-off (exit → next
task's `started_at`) and worker start (`started_at` → request at the gateway), and gives the
reply→next-request turnaround for both tools (FIFO pairing of sorted replies and arrivals, which
needs no slot ids, so it applies to parallel too).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (IQ, REPO, bench_env, gateway, gateway_calls, gateway_reset, machine, median,  # noqa: E402
                     out_dir, pct, table, write_config)

sys.path.insert(0, str(REPO))
from image_queue.store import Store  # noqa: E402


def key_of(prompt: str | None) -> str:
    return (prompt or "").rsplit(" ", 1)[-1]


def fifo_turnaround(calls: list[dict[str, Any]], workers: int) -> list[float]:
    """Arrival k (after the first `workers`) minus reply k-workers, both sorted."""
    arrivals = sorted(c["arrived"] for c in calls)
    replies = sorted(c["replied"] for c in calls)
    return [arrivals[k] - replies[k - workers] for k in range(workers, len(arrivals))]


def run_image_queue(work: Path, base: str, n: int, workers: int, rep: int) -> dict[str, Any]:
    state = work / f"state-{rep}"
    tasks = [{"task_key": f"t{i:03d}", "prompt": f"bench image t{i:03d}", "size": "1024x1024"} for i in range(n)]
    tasks_path = work / "tasks.json"
    tasks_path.write_text(json.dumps({"batch_name": "bench", "tasks": tasks}))
    argv = [*IQ, "run", f"@{tasks_path}", "--state-dir", str(state), "--max-workers", str(workers), "--json"]
    gateway_reset(base)
    t0 = time.time()
    proc = subprocess.run(argv, cwd=work, env=bench_env(), capture_output=True, text=True, timeout=600)
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"image_queue run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    calls = {key_of(c["prompt"]): c for c in gateway_calls(base)}
    (work / f"calls-{rep}.json").write_text(json.dumps(calls))
    store = Store(state)
    records = store.run_tasks(doc["run_id"])
    store.close()
    assert len(records) == n and len(calls) == n, (len(records), len(calls))
    by_slot: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_slot.setdefault(r["worker"]["worker_id"].split("-")[0], []).append(r)
    gaps, handoff, start, per_slot = [], [], [], {}
    for slot, rows in sorted(by_slot.items()):
        rows.sort(key=lambda r: r["started_at"])
        tails = []
        for prev, nxt in zip(rows, rows[1:]):
            arrived = calls[nxt["task_key"]]["arrived"]
            gaps.append(arrived - prev["finished_at"])
            handoff.append(nxt["started_at"] - prev["finished_at"])
            start.append(arrived - nxt["started_at"])
            tails.append(prev["finished_at"] - calls[prev["task_key"]]["replied"])
        per_slot[slot] = {"first": calls[rows[0]["task_key"]]["arrived"] - t0, "tail": median(tails),
                          "gap": median([calls[b["task_key"]]["arrived"] - a["finished_at"] for a, b in zip(rows, rows[1:])]),
                          "end": rows[-1]["finished_at"] - t0}
    firsts = sorted(calls[min(rows, key=lambda r: r["started_at"])["task_key"]]["arrived"] - t0 for rows in by_slot.values())
    first = min(c["arrived"] for c in calls.values())
    last_reply = max(c["replied"] for c in calls.values())
    return {"wall": t1 - t0, "gaps": gaps, "handoff": handoff, "start": start,
            "turnaround": fifo_turnaround(list(calls.values()), workers),
            "startup": first - t0, "tail": t1 - last_reply,
            "slots": len(by_slot), "completed": doc["summary"]["completed"], "firsts": firsts, "per_slot": per_slot}


def run_parallel(work: Path, base: str, n: int, workers: int, rep: int) -> dict[str, Any]:
    out = work / f"parallel-{rep}"
    out.mkdir()
    body = '{"model":"gpt-image-2","prompt":"bench image {}","n":1,"size":"1024x1024"}'
    argv = ["parallel", "--will-cite", f"-j{workers}", "-q", "curl", "-sS", "--fail", "--noproxy", "*",
            "-o", f"{out}/{{}}.json", "-H", "authorization: Bearer sk-bench-dummy-0000",
            "-H", "content-type: application/json", "--data-binary", body, f"{base}/v1/images/generations",
            ":::", *[f"t{i:03d}" for i in range(n)]]
    gateway_reset(base)
    t0 = time.time()
    proc = subprocess.run(argv, env=bench_env(), capture_output=True, text=True, timeout=600)
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"parallel failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    calls = gateway_calls(base)
    assert len(calls) == n, len(calls)
    return {"wall": t1 - t0, "turnaround": fifo_turnaround(calls, workers),
            "startup": min(c["arrived"] for c in calls) - t0, "tail": t1 - max(c["replied"] for c in calls)}


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-parallel", action="store_true", help="skip the GNU parallel comparison")
    args = ap.parse_args()
    n, w, lat = args.tasks, args.workers, args.latency
    have_parallel = shutil.which("parallel") is not None and shutil.which("curl") is not None
    if not have_parallel and not args.no_parallel:
        print("NOTE: GNU parallel or curl is not installed (apt-get install -y parallel curl); "
              "the image_queue/parallel ratio is skipped.", file=sys.stderr)
    use_parallel = have_parallel and not args.no_parallel
    ideal = math.ceil(n / w) * lat
    work = out_dir("scheduler")
    print(f"# scheduler: N={n} L={lat}s workers={w} ideal={ideal:.2f}s repeat={args.repeat}")
    print(f"# {machine()}")
    iq_runs, par_runs = [], []
    with gateway(lat) as base:
        write_config(work, base)
        for rep in range(args.repeat):
            iq_runs.append(run_image_queue(work, base, n, w, rep))
            r = iq_runs[-1]
            print(f"  rep {rep}: image_queue {r['wall']:.2f}s (each slot's first request at +"
                  + "/".join(f"{x:.2f}" for x in r["firsts"]) + " s)", end="", flush=True)
            if use_parallel:
                par_runs.append(run_parallel(work, base, n, w, rep))
                print(f", parallel {par_runs[-1]['wall']:.2f}s", end="")
            print(flush=True)

    rows = []
    for rep, r in enumerate(iq_runs):
        p = par_runs[rep] if par_runs else None
        rows.append([rep, f"{r['wall']:.2f}", f"{ideal / r['wall']:.3f}", ms(median(r["gaps"])), ms(pct(r["gaps"], 95)),
                     ms(max(r["gaps"])), ms(median(r["handoff"])), ms(median(r["start"])),
                     ms(median(r["turnaround"])), ms(r["startup"]), ms(r["tail"]),
                     f"{p['wall']:.2f}" if p else "-", f"{ideal / p['wall']:.3f}" if p else "-",
                     ms(median(p["turnaround"])) if p else "-", ms(p["startup"]) if p else "-",
                     ms(p["tail"]) if p else "-", f"{r['wall'] / p['wall']:.3f}" if p else "-"])
    print()
    print(table(["rep", "iq wall s", "iq eff", "gap med ms", "gap p95 ms", "gap max ms", "hand-off med ms",
                 "worker start med ms", "iq reply→next med ms", "iq startup ms", "iq tail ms",
                 "parallel wall s", "parallel eff", "parallel reply→next med ms", "parallel startup ms",
                 "parallel tail ms", "iq/parallel"], rows))
    print("\nper slot (image_queue, last rep): first request, median reply→worker exit, median exit→next request, last exit")
    print(table(["slot", "first request s", "reply→exit med ms", "exit→request med ms", "last exit s"],
                [[k, f"{v['first']:.3f}", ms(v["tail"]), ms(v["gap"]), f"{v['end']:.3f}"]
                 for k, v in iq_runs[-1]["per_slot"].items()]))
    walls = [r["wall"] for r in iq_runs]
    all_gaps = [g for r in iq_runs for g in r["gaps"]]
    summary = [["image_queue wall s (median, min–max)", f"{median(walls):.2f} ({min(walls):.2f}–{max(walls):.2f})"],
               ["efficiency ideal/actual (median)", f"{ideal / median(walls):.3f}"],
               ["slot gap median / p95 ms (all reps)", f"{ms(median(all_gaps))} / {ms(pct(all_gaps, 95))}"]]
    if par_runs:
        pw = [p["wall"] for p in par_runs]
        summary += [["parallel wall s (median, min–max)", f"{median(pw):.2f} ({min(pw):.2f}–{max(pw):.2f})"],
                    ["image_queue / parallel (ratio of medians)", f"{median(walls) / median(pw):.3f}"]]
    print()
    print(table(["summary", "value"], summary))
    print(f"\n(work dir: {work})")


if __name__ == "__main__":
    main()
