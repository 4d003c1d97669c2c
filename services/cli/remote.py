"""What the client commands (``submit``, ``tasks``, ``versions``, ``promote``, ``compare``, ``segment``,
``export``, ``demo``) share: their common flags, the client built from them, output as tables or
``--json``, progress bars, and the exit codes.

Exit codes: 0 done; 1 the server refused (its message, in the API's words) or the task failed or was
cancelled; 2 a bad flag, configuration or file, or the server could not be reached; 130 detached
from a task with Ctrl-C (it keeps running).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel

OK, REFUSED, ERROR, DETACHED = 0, 1, 2, 130
COMMON_HELP = ("server and key: --url/--api-key, else STRATA_URL/STRATA_API_KEY, else the config file "
               "(~/.config/strata/client.toml: url, api_key, model), else for a server on this machine the admin "
               "key `make run` wrote to var/api-keys.txt")


def common_flags(*, model: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the flags every client command takes."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server", COMMON_HELP)
    group.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000 (STRATA_URL)")
    group.add_argument("--api-key", help="an API key (STRATA_API_KEY)")
    group.add_argument("--json", action="store_true", help="print the answer as JSON (for scripts), no tables")
    if model:
        group.add_argument("--model", "-m", help="the model (STRATA_MODEL, or the config file's model)")
    return parent


def client_command(func: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build the client from the flags, turn the client's errors into messages and exit codes."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from services.client import ApiError, ServerUnreachable, Strata
        from services.client.config import load_config
        from services.errors import StrataError

        config = None
        try:
            config = load_config(args.url, args.api_key, getattr(args, "model", None))
            if hasattr(args, "model"):
                args.model = config.model
            with Strata(config=config) as client:
                return func(args, client)
        except argparse.ArgumentTypeError as err:  # a flag refused after parsing: argparse's exit code
            fail(f"{args.command}: {err}")
            return ERROR
        except ApiError as err:
            no_key = err.status == 401 and config is not None and not config.api_key
            hint = " (no API key: set STRATA_API_KEY or pass --api-key)" if no_key else ""
            fail(f"{err.method} {err.path}: {err.status} {err.detail}{hint}")
            return REFUSED
        except ServerUnreachable as err:
            fail(f"{err} (is the server running? `make run` starts one)")
            return ERROR
        except StrataError as err:
            fail(str(err))
            return ERROR
    return run


def need_model(args: argparse.Namespace) -> str:
    if not args.model:
        raise argparse.ArgumentTypeError("--model: no model given (or set STRATA_MODEL, or `model` in the config file)")
    return args.model


def fail(message: str) -> None:
    print(f"strata: {message}", file=sys.stderr)


def say(message: str) -> None:
    """A line for the person at the terminal (stderr: stdout is for answers)."""
    print(message, file=sys.stderr, flush=True)


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    print(json.dumps(value, indent=2, default=str))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in RIGHT_ALIGNED else "left")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:  # piped or captured: whole rows rather than the 80 columns of a guess
        console = Console(width=max(console.width, WIDE))
    console.print(table)


WIDE = 200  # the width of tables written to a pipe or a file
RIGHT_ALIGNED = {"version", "parent", "classes", "old", "new", "all", "epoch", "progress", "iou a", "iou b", "delta",
                 "images", "loss"}


def points(iou: float | None) -> str:
    """An IoU (0..1) as points (0..100), as the dashboard shows it."""
    return "-" if iou is None else f"{100 * iou:.1f}"


def signed_points(delta: float | None) -> str:
    return "-" if delta is None else f"{100 * delta:+.1f}"
