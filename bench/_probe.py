"""Run the image_queue CLI in this process and, at exit, record what it cost.

    BENCH_PROBE_OUT=file.json python bench/_probe.py run @tasks.json ...

Writes {"self": ..., "children": ...}: getrusage of this process (the supervisor: CPU seconds,
peak RSS) and of its waited-for children (the workers and standbys: `maxrss` is the peak RSS of the
largest one), plus VmHWM from /proc/self/status. Exact, with no sampling race: the numbers are read
after the run has ended, inside the process.
"""

from __future__ import annotations

import atexit
import os
import resource
import runpy
import sys


def _dump() -> None:
    import json

    def usage(who: int) -> dict[str, float]:
        r = resource.getrusage(who)
        return {"cpu_user_s": r.ru_utime, "cpu_sys_s": r.ru_stime, "maxrss_kb": r.ru_maxrss}

    hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    with open(os.environ["BENCH_PROBE_OUT"], "w") as f:
        json.dump({"self": usage(resource.RUSAGE_SELF), "children": usage(resource.RUSAGE_CHILDREN),
                   "vmhwm_kb": hwm}, f)


atexit.register(_dump)
_exit = os._exit


def _dump_then_exit(code: int) -> None:  # `run` leaves with os._exit, which skips atexit
    _dump()
    _exit(code)


os._exit = _dump_then_exit
sys.argv = ["image_queue", *sys.argv[1:]]
runpy.run_module("image_queue", run_name="__main__", alter_sys=True)
