"""Options and helpers shared by every command."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator

import orjson
import typer

from image_queue.errors import ImageQueueError

SCHEMA_VERSION = 1

StateDirOpt = Annotated[
    Path,
    typer.Option("--state-dir", envvar="IMAGE_QUEUE_STATE_DIR", help="State directory (env IMAGE_QUEUE_STATE_DIR).",
                 show_default=True),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Provider config file (default: ./image_queue.toml if present)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (with schema_version) only.")]


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


def err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Render our errors as one line on stderr and exit with their code; never a traceback."""
    try:
        yield
    except ImageQueueError as exc:
        err(f"image_queue: error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err("image_queue: interrupted")
        raise typer.Exit(130) from None
