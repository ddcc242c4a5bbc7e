"""Options and helpers shared by every command.

Kept light on purpose (no rich, httpx or pydantic): `status`/`list`/`get`/`history` import only this
module and the store, so they start fast.
"""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Sequence

import orjson
import typer

from image_queue.errors import ImageQueueError

# The version of every --json document. Bump it only when a field is removed or changes meaning;
# adding a field is not a new version.
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


def json_doc(kind: str, **fields: Any) -> dict[str, Any]:
    """The envelope of every --json document: `schema_version`, then what it is, then the data."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **fields}


def epilog(*examples: str, note: str = "") -> str:
    """The end of a command's --help: an optional note, then copy-paste examples, one per paragraph."""
    return "\n\n".join([*([note] if note else []), "Examples:" if len(examples) > 1 else "Example:", *examples])


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.flush()


def err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, max_widths: Sequence[int] | None = None) -> None:
    """Aligned plain-text columns, the last one free; cells are one line and cut to fit the terminal."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(value))
    if max_widths:
        widths = [min(w, m) if m else w for w, m in zip(widths, max_widths)] + widths[len(max_widths):]
    total = shutil.get_terminal_size((160, 24)).columns if sys.stdout.isatty() else 0

    def line(values: Sequence[str]) -> str:
        parts = [_fit(v, widths[i]).ljust(widths[i]) for i, v in enumerate(values[:-1])]
        text = "  ".join([*parts, values[-1]]).rstrip()
        return _fit(text, total) if total else text

    print(line(list(headers)))
    for row in cells:
        print(line(row))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return " ".join(str(value).split())  # one line, whatever the text held


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


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
