"""A fast path for the read-only commands `status`, `list`, `get` and `history`.

Typer builds a pydantic TypeAdapter for every parameter it parses, so going through the app costs
these commands ~100 ms of imports (pydantic) and set-up, several times the work they do. Here their
argument lists are parsed directly, from the same `typer.Option`/`typer.Argument` declarations the
app uses (names, defaults, env vars, min/max), and the command functions are called as they are.

Anything this parser does not plainly understand — `--help`, an unknown or malformed option, a value
out of range, a missing argument — returns None and the caller hands the command line to the typer
app, so errors and help read exactly the same as before.
"""

from __future__ import annotations

import inspect as pyinspect
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

FAST_COMMANDS = {"status": "status_command", "list": "list_command", "get": "get_command",
                 "history": "history_command"}
_TYPES = {bool, int, str, Path}


def run(argv: list[str]) -> int | None:
    """Run a read-only command and return its exit code, or None to let the typer app handle argv."""
    if not argv or argv[0] not in FAST_COMMANDS or "--" in argv:
        return None
    from image_queue.cli import inspect

    fn = getattr(inspect, FAST_COMMANDS[argv[0]], None)
    kwargs = _parse(fn, argv[1:]) if fn is not None else None
    if kwargs is None:
        return None
    import typer

    try:
        fn(**kwargs)  # type: ignore[misc]
        sys.stdout.flush()
    except typer.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:  # `image_queue list | head`: stop quietly, like click does
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at interpreter exit)
        return 1
    return 0


def _params(fn: Callable[..., Any]) -> list[dict[str, Any]] | None:
    """Each parameter's declaration, or None if one is of a kind this parser does not handle."""
    import typer.models

    hints = typing.get_type_hints(fn, include_extras=True)
    params = []
    for name, p in pyinspect.signature(fn).parameters.items():
        hint = hints.get(name)
        info = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, typer.models.ParameterInfo)), None)
        if info is None:
            return None
        base = typing.get_args(hint)[0]
        optional = typing.get_origin(base) in (typing.Union, types.UnionType)
        if optional:
            args = [a for a in typing.get_args(base) if a is not type(None)]
            base = args[0] if len(args) == 1 else None
        if base not in _TYPES:
            return None
        decls = [d for d in (info.default, *(getattr(info, "param_decls", None) or ())) if isinstance(d, str) and d.startswith("-")]
        if any("/" in d for d in decls):
            return None
        argument = isinstance(info, typer.models.ArgumentInfo)
        if not argument and not decls:
            decls = [f"--{name.replace('_', '-')}"]
            if base is bool:
                return None  # typer makes `--x/--no-x` of these; leave them to it
        params.append({"name": name, "type": base, "decls": decls, "argument": argument,
                       "default": p.default, "envvar": getattr(info, "envvar", None),
                       "min": getattr(info, "min", None), "max": getattr(info, "max", None)})
    return params


def _parse(fn: Callable[..., Any], args: list[str]) -> dict[str, Any] | None:
    params = _params(fn)
    if params is None:
        return None
    by_decl = {d: p for p in params for d in p["decls"]}
    positional = [p for p in params if p["argument"]]
    given: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            decl, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if decl not in by_decl and not arg.startswith("--") and len(arg) > 2:
                decl, eq, value = arg[:2], "=", arg[2:]  # `-n5`, as click reads it
            p = by_decl.get(decl)
            if p is None or (p["type"] is bool and eq):
                return None
            if p["type"] is bool:
                given[p["name"]] = True
            else:
                if not eq:
                    i += 1
                    if i >= len(args) or args[i].startswith("-"):
                        return None
                    value = args[i]
                given[p["name"]] = value
        else:
            if not positional:
                return None
            given[positional.pop(0)["name"]] = arg
        i += 1
    kwargs = {}
    for p in params:
        value = given.get(p["name"])
        if value is None and p["envvar"] and os.environ.get(p["envvar"]):
            value = os.environ[p["envvar"]]
        if value is None:
            if p["default"] is pyinspect.Parameter.empty:
                return None
            kwargs[p["name"]] = p["default"]
            continue
        if p["type"] is int:
            try:
                value = int(value)
            except ValueError:
                return None
            if (p["min"] is not None and value < p["min"]) or (p["max"] is not None and value > p["max"]):
                return None
        elif p["type"] is Path:
            value = Path(value)
        kwargs[p["name"]] = value
    return kwargs
