"""The command line: one module per command group, assembled here."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from image_queue.cli import cancel, inspect, plan, report, run

# Words people reach for from other tools, mapped to our command for the "did you mean" hint.
SYNONYMS = {"ls": "list", "show": "get", "info": "get", "ps": "status", "top": "status", "stop": "cancel",
            "kill": "cancel", "rm": "cancel", "check": "validate", "lint": "validate", "plan": "validate",
            "gallery": "report", "html": "report", "log": "history", "logs": "history", "start": "run",
            "submit": "run"}


class CommandGroup(TyperGroup):
    """Typer's group, plus hints for unknown commands it cannot match by spelling."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:  # click's UsageError (vendored inside typer, so matched by shape)
            message = getattr(exc, "message", None)
            if isinstance(message, str) and message.startswith("No such command") and "Did you mean" not in message:
                typo = args[0] if args else ""
                if SYNONYMS.get(typo.lower()) in self.commands:
                    exc.message = f"{message.rstrip('.')}. Did you mean {SYNONYMS[typo.lower()]!r}?"  # type: ignore[attr-defined]
                else:
                    exc.message = f"{message} Commands: {', '.join(self.list_commands(ctx))}."  # type: ignore[attr-defined]
            raise


app = typer.Typer(
    name="image_queue",
    cls=CommandGroup,
    help="Generate images in bulk through paid image APIs, with hard caps, timeouts and an audit trail.",
    epilog="Examples:\n\nimage_queue run @examples/covers.json\n\nimage_queue report   (an HTML gallery of the last run)\n\n"
           "image_queue COMMAND --help   (every command has examples)",
    no_args_is_help=True,
    add_completion=False,
    # Boxes and colours for people; plain "Error: ..." lines for logs, pipes and CI.
    rich_markup_mode="rich" if sys.stdout.isatty() and sys.stderr.isatty() else None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
run.register(app)
plan.register(app)
inspect.register(app)
cancel.register(app)
report.register(app)


def main() -> None:
    from image_queue.cli import fast

    code = fast.run(sys.argv[1:])  # status/list/get/history without typer's parsing (it loads pydantic)
    if code is not None:
        raise SystemExit(code)
    app(prog_name="image_queue")
