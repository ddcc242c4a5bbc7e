"""The command line: one module per command group, assembled here."""

from __future__ import annotations

import typer

from image_queue.cli import cancel, inspect, plan, report, run

app = typer.Typer(
    name="image_queue",
    help="Generate images in bulk through paid image APIs, with hard caps, timeouts and an audit trail.\n\n"
    "Example: image_queue run @examples/covers.json",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
run.register(app)
plan.register(app)
inspect.register(app)
cancel.register(app)
report.register(app)


def main() -> None:
    app(prog_name="image_queue")
