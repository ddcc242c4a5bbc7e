"""The run loop: slots, worker processes, timeouts, cancel requests and signals.

Event-driven: one `selectors` loop waits on each running worker's pidfd, the signal wakeup pipe
and the nearest deadline, so the next queued task is handed to a slot the moment the slot frees.
Each slot keeps one standby worker (started while the slot's current worker waits on the API) that
has already paid for imports; it is still one process per task.

Timeouts and cancels are enforced from outside: SIGTERM to the worker's process group, a grace
period, then SIGKILL to the group. After any worker exits, its group is SIGKILLed so no grandchild
survives it. A worker's result.json is accepted only if it carries the attempt's token and the
worker's pid.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from image_queue.outcome import diagnosis, settle
from image_queue.status import Status
from image_queue.store import Store, atomic_write_json, process_start_time

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.25
WORKER_ARGV = (sys.executable, "-m", "image_queue.worker")

EventHandler = Callable[..., None]


@contextmanager
def capture_signals() -> Iterator[list[int]]:
    """Note SIGINT/SIGTERM in a list instead of dying, for the whole of a run (admission included)."""
    pending: list[int] = []

    def note(signum: int, frame: object) -> None:
        pending.append(signum)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Settings:
    max_workers: int = 4
    task_timeout_seconds: float = 600.0
    kill_grace_seconds: float = 5.0
    max_attempts: int = 3
    output_dir: Path = Path("output")
    preload: tuple[str, ...] = ()


@dataclass
class Attempt:
    record: dict[str, Any]
    proc: subprocess.Popen[bytes]
    token: str
    deadline: float
    pidfd: int | None = None
    end_reason: str | None = None  # timeout | cancel | interrupt
    kill_at: float | None = None


@dataclass
class Slot:
    index: int
    current: Attempt | None = None
    standby: subprocess.Popen[bytes] | None = None
    spawned: int = 0


@dataclass
class Supervisor:
    store: Store
    run_id: str
    queue: list[dict[str, Any]]  # records of tasks to run, in order; each has a "job" template
    settings: Settings
    on_event: EventHandler = lambda *a, **k: None
    on_change: Callable[["Supervisor"], None] = lambda s: None
    interrupted: int | None = None
    slots: list[Slot] = field(default_factory=list)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _next_cancel_poll: float = 0.0
    _hard_kill: bool = False
    signals: list[int] = field(default_factory=list)  # noted by signal handlers, acted on by the loop
    _ready: set[int] = field(default_factory=set)  # pids of workers done with their imports
    _changed: bool = False  # queue_state.json is due for a rewrite

    # -- public -----------------------------------------------------------------------------
    def prespawn(self, n: int) -> None:
        """Start the first n workers now, so their imports overlap the run's set-up; run() uses them."""
        self.slots = self.slots or [Slot(i) for i in range(self.settings.max_workers)]
        for slot in self.slots[:n]:
            slot.standby = slot.standby or self._spawn(slot)

    def release(self) -> None:
        """Let go of workers that were never given a task (a run that failed before it began)."""
        self._release_standbys()

    def run(self) -> int | None:
        """Run every queued task; return the signal number that interrupted the run, if any."""
        self.slots = self.slots or [Slot(i) for i in range(self.settings.max_workers)]
        self.queue = list(self.queue)
        self.queue.reverse()  # pop() from the end is O(1)
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(rfd, selectors.EVENT_READ, None)
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._handle_signals()  # one may have come during admission
            for slot in self.slots:
                if self.queue:
                    self._start(slot)
            self._flush_changes()
            while any(s.current for s in self.slots):
                self._wait(rfd)
                self._flush_changes()
            self._handle_signals()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self._release_standbys()
            self._selector.unregister(rfd)
            os.close(rfd)
            os.close(wfd)
        return self.interrupted

    def _flush_changes(self) -> None:
        if self._changed:
            self._changed = False
            self.on_change(self)

    def running(self) -> list[Attempt]:
        return [s.current for s in self.slots if s.current]

    def queued(self) -> list[dict[str, Any]]:
        return list(reversed(self.queue))

    # -- the loop ---------------------------------------------------------------------------
    def _wait(self, rfd: int) -> None:
        now = time.monotonic()
        wake = self._next_cancel_poll
        for att in self.running():
            wake = min(wake, att.kill_at if att.kill_at is not None else att.deadline)
        events = self._selector.select(max(0.0, wake - now))
        exited = []
        for key, _ in events:
            if key.fd == rfd:
                try:
                    while os.read(rfd, 512):
                        pass
                except BlockingIOError:
                    pass
            elif isinstance(key.data, Slot):
                exited.append(key.data)
            else:
                self._on_ready(key.data)
        if exited:
            self._finish_all(exited)
        self._handle_signals()
        now = time.monotonic()
        for slot in self.slots:
            att = slot.current
            if att is None:
                continue
            if att.kill_at is not None and now >= att.kill_at:
                self._signal_group(att, signal.SIGKILL)
                att.kill_at = float("inf")
            elif att.kill_at is None and now >= att.deadline:
                self._terminate(att, "timeout")
        if now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL_SECONDS
            self._poll_cancels()

    def _on_signal(self, signum: int, frame: object) -> None:
        """Only note the signal; the loop acts on it (a handler must not touch the store)."""
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            self._interrupt(self.signals.pop(0))

    def _interrupt(self, signum: int) -> None:
        if self.interrupted is not None and signum == signal.SIGINT:
            self._hard_kill = True
        self.interrupted = self.interrupted or signum
        for record in self.queued():
            self._cancel_queued(record, "the run was interrupted before this task started")
        self.queue.clear()
        for att in self.running():
            if self._hard_kill:
                self._signal_group(att, signal.SIGKILL)
                att.end_reason = att.end_reason or "interrupt"
            elif att.end_reason is None:
                self._terminate(att, "interrupt")

    # -- starting ---------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["IMAGE_QUEUE_PRELOAD"] = ",".join(self.settings.preload)
        log_fd = os.open(self.store.workers_dir / "standby.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = subprocess.Popen(WORKER_ARGV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fd,
                                    start_new_session=True, close_fds=True, env=env)
        finally:
            os.close(log_fd)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self._selector.register(proc.stdout, selectors.EVENT_READ, proc)  # "ready", then EOF: see _on_ready
        slot.spawned += 1
        return proc

    def _on_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """A worker finished its imports (it wrote "ready" or, pointing stdout at its task dir, closed the pipe).

        A slot's next standby is spawned only once the slot's current worker is ready, so cold
        starts (the first round) do not compete for the CPU with the standbys meant for later.
        """
        self._forget_ready_pipe(proc)
        self._ready.add(proc.pid)
        for slot in self.slots:
            if slot.current is not None and slot.current.proc is proc:
                self._spawn_standby(slot)

    def _forget_ready_pipe(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None and not proc.stdout.closed:
            self._selector.unregister(proc.stdout)
            proc.stdout.close()

    def _spawn_standby(self, slot: Slot) -> None:
        if self.queue and slot.standby is None and not self.interrupted:
            slot.standby = self._spawn(slot)

    def _start(self, slot: Slot) -> None:
        record = self.queue.pop()
        proc = slot.standby if slot.standby is not None and slot.standby.poll() is None else None
        if proc is None and slot.standby is not None:
            self._reap_standby(slot.standby)
        slot.standby = None
        proc = proc or self._spawn(slot)
        token = secrets.token_hex(16)
        job = {**record.pop("job"), "token": token, "run_id": self.run_id}
        task_dir = Path(job["task_dir"])
        timeout = record.get("timeout_seconds") or self.settings.task_timeout_seconds
        record.update(
            status=Status.RUNNING.value, started_at=time.time(), pid=proc.pid,
            worker={"worker_id": f"slot{slot.index}-{slot.spawned}", "pid": proc.pid, "pgid": proc.pid,
                    "pid_start_time": process_start_time(proc.pid), "token": token, "attempt": job["attempt"]},
        )
        self.store.save_task(record)  # durable before the worker may spend anything
        att = Attempt(record=record, proc=proc, token=token, deadline=time.monotonic() + timeout)
        try:
            assert proc.stdin is not None
            proc.stdin.write(orjson.dumps(job) + b"\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError) as exc:
            log.warning("worker %s died before its assignment: %s", proc.pid, exc)
        atomic_write_json(task_dir / "command.json", {
            "argv": list(WORKER_ARGV), "cwd": os.getcwd(), "pid": proc.pid,
            "env_names": sorted(k for k in os.environ if k.startswith(("IMAGE_QUEUE_", "OPENAI_")) or k.endswith("_API_KEY")),
            "api_key_env": job["provider"].get("api_key_env"),
            "assignment": {k: v for k, v in job.items() if k != "request"},  # the request is in task.json
            "timeout_seconds": timeout, "kill_grace_seconds": self.settings.kill_grace_seconds,
        })
        try:
            att.pidfd = os.pidfd_open(proc.pid)
            self._selector.register(att.pidfd, selectors.EVENT_READ, slot)
        except ProcessLookupError:
            att.pidfd = None
        slot.current = att
        self.on_event("started", record)
        if proc.pid in self._ready:  # the next task for this slot: start its process while this one works
            self._spawn_standby(slot)
        if att.pidfd is None:
            self._finish_all([slot])
        self._changed = True

    # -- ending -----------------------------------------------------------------------------
    def _signal_group(self, att: Attempt, sig: int) -> None:
        try:
            os.killpg(att.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self, att: Attempt, reason: str) -> None:
        """SIGTERM the worker's group now, SIGKILL it after the grace period."""
        att.end_reason = reason
        att.kill_at = time.monotonic() + self.settings.kill_grace_seconds
        self._signal_group(att, signal.SIGTERM)
        if reason == "timeout":
            self.on_event("timeout", att.record)

    def _finish_all(self, slots: list[Slot]) -> None:
        """Reap the slots' exited workers and give each freed slot its next task, then settle them.

        Workers that were given the same latency end together; handing out every next task before
        the (fsync-bound) bookkeeping keeps one slot's bookkeeping off another slot's gap.
        """
        ended = []
        for slot in slots:
            att = slot.current
            if att is None:
                continue
            if att.pidfd is not None:
                self._selector.unregister(att.pidfd)
                os.close(att.pidfd)
            self._signal_group(att, signal.SIGKILL)  # no grandchild outlives its worker
            returncode = att.proc.wait()
            ended.append((att, returncode, time.time()))
            self._forget_ready_pipe(att.proc)
            self._ready.discard(att.proc.pid)
            slot.current = None
        for slot in slots:
            if slot.current is None and self.queue and not self.interrupted:
                self._start(slot)
        for att, returncode, finished in ended:
            record = att.record
            record.update(finished_at=finished, elapsed_seconds=round(finished - record["started_at"], 3),
                          returncode=returncode)
            timeout = record.get("timeout_seconds") or self.settings.task_timeout_seconds
            settle(self.store, record, end_reason=att.end_reason, returncode=returncode, token=att.token,
                   worker_pid=att.proc.pid, timeout=timeout, run_id=self.run_id)
            self.store.save_task(record)
            self.on_event("finished", record)
        self._changed = True

    # -- cancel -----------------------------------------------------------------------------
    def _cancel_queued(self, record: dict[str, Any], why: str) -> None:
        record.pop("job", None)
        record.update(status=Status.CANCELLED.value, finished_at=time.time(), error=why,
                      diagnosis=diagnosis("cancelled"))
        self.store.save_task(record)
        self.on_event("cancelled", record)

    def _poll_cancels(self) -> None:
        targets = self.store.pending_cancels()
        if not targets:
            return
        cancel_all = "ALL" in targets
        wanted = set(targets)
        keep = []
        for record in self.queued():
            if cancel_all or record["task_id"] in wanted:
                self._cancel_queued(record, "cancelled by request before it started")
            else:
                keep.append(record)
        self.queue = list(reversed(keep))
        for att in self.running():
            if (cancel_all or att.record["task_id"] in wanted) and att.end_reason is None:
                self._terminate(att, "cancel")
        for target in targets:
            self.store.clear_cancel(target)
        self.on_change(self)

    def _reap_standby(self, proc: subprocess.Popen[bytes]) -> None:
        self._forget_ready_pipe(proc)
        self._ready.discard(proc.pid)
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()  # EOF: the standby leaves without doing anything
            proc.wait(timeout=2)
        except (subprocess.TimeoutExpired, OSError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def _release_standbys(self) -> None:
        for slot in self.slots:
            if slot.standby is not None:
                self._reap_standby(slot.standby)
                slot.standby = None
            if slot.current is not None:  # only after an unexpected error in the loop
                self._signal_group(slot.current, signal.SIGKILL)
                slot.current.proc.wait()
                self._forget_ready_pipe(slot.current.proc)
