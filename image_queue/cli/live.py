"""The live display of `run` on a terminal (rich is imported only here, only then).

Its own thread redraws four times a second from the Tracker and prints finished tasks above the
display; the supervisor's `on_event` calls only append to a deque.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from image_queue.cli.progress import OK_STATUSES, Reporter, format_duration, event_line, plan_lines


class LiveReporter(Reporter):
    """A rich live display on stderr, redrawn by its own thread: within 0.25 s of a change, else once a second."""

    REFRESH_SECONDS = 0.25
    watches_attempts = True

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        from rich.console import Console

        self.console = Console(stderr=True)
        self.messages: deque[tuple[str, dict[str, Any], dict[str, Any]]] = deque()
        self.live: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-display", daemon=True)

    def show_plan(self, plan: Any, run: dict[str, Any]) -> None:
        from rich.live import Live
        from rich.markup import escape

        for line in plan_lines(plan, run, self.store.root):
            style = "yellow" if line.startswith("rejected") else "dim"
            self.console.print(f"[{style}]{escape(line)}[/]", highlight=False, soft_wrap=True)
        self.live = Live(console=self.console, get_renderable=self.render, auto_refresh=False, transient=True,
                         redirect_stdout=False, redirect_stderr=True)
        self.live.start()
        self._thread.start()

    def show_event(self, kind: str, snap: dict[str, Any], extra: dict[str, Any]) -> None:
        if kind != "started":
            self.messages.append((kind, snap, extra))  # printed by the display thread

    def _loop(self) -> None:
        try:
            shown, drawn_at = None, 0.0
            while not self._stop.wait(self.REFRESH_SECONDS) and not self.broken:
                with self.tracker.lock:
                    state = (self.tracker.done, tuple(self.tracker.counts.items()))
                # an event shows within REFRESH_SECONDS; the clocks (whole seconds) need one redraw a
                # second, and redrawing four times a second while every worker waits cost ~1.6% CPU
                if self.messages or state != shown or time.monotonic() - drawn_at >= 1.0:
                    self._draw()
                    shown, drawn_at = state, time.monotonic()
        except Exception as exc:  # the run goes on without a display
            self._give_up(exc)

    def _draw(self) -> None:
        from rich.markup import escape

        while self.messages:
            kind, snap, extra = self.messages.popleft()
            ok = kind == "finished" and snap.get("status") in OK_STATUSES
            style = "green" if ok else "yellow" if kind in ("retry", "timeout") else "red"
            mark = "✓" if ok else "↻" if kind == "retry" else "!" if kind == "timeout" else "✗"
            self.live.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] [{style}]{mark}[/] "
                                    f"{escape(event_line(kind, snap, extra))}", highlight=False, soft_wrap=True)
        self.live.refresh()

    def render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        t = self.tracker
        with t.lock:
            counts = dict(t.counts)
            slots = {i: dict(s) for i, s in t.slots.items()}
            done, to_run, workers = t.done, t.to_run, t.workers
            per_minute, eta = t.rates()
        now = time.monotonic()
        head = Text.assemble((f"run {t.run_id}", "bold"), f"  {t.batch_name}  ", (f"{done}/{to_run} done", "bold"),
                             f"  ·  {per_minute:.1f} images/min" if per_minute is not None else "  ·  - images/min",
                             f"  ·  ETA {format_duration(eta)}" if eta is not None else "  ·  ETA -")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim", expand=False)
        for name, kw in (("SLOT", {"justify": "right"}), ("TASK_KEY", {"max_width": 40, "no_wrap": True}),
                         ("ELAPSED", {"justify": "right"}), ("ATTEMPT", {"justify": "right"}), ("STATUS", {})):
            table.add_column(name, **kw)
        for i in range(max(workers, max(slots, default=-1) + 1)):
            s = slots.get(i)
            if s is None:
                table.add_row(str(i + 1), Text("idle", "dim"), "", "", "")
            else:
                style = "yellow" if s["state"] != "running" else "cyan"
                table.add_row(str(i + 1), s["task_key"], format_duration(now - s["since"]), str(s["attempt"]),
                              Text(s["state"], style))
        order = ("queued", "running", "completed", "reused", "failed", "timed_out", "cancelled", "rejected",
                 "skipped", "orphan_late_output", "orphaned")
        styles = {"completed": "green", "reused": "green", "running": "cyan", "queued": "dim"}
        totals = Text("  ·  ").join(Text(f"{s} {counts[s]}", styles.get(s, "red"))
                                    for s in order if counts.get(s))
        progress = Table.grid(padding=(0, 2))
        progress.add_row(ProgressBar(total=max(1, to_run), completed=done, width=30), totals)
        return Group(head, progress, table)

    def close(self) -> None:
        drawing = not self.broken
        super().close()
        if self.live is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            try:
                if drawing:
                    self._draw()  # the last finished lines
            finally:
                self.live.stop()
