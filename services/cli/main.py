"""The ``strata`` command: one CLI, one module per subcommand group.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (called with the parsed args; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from services.errors import StrataError

# The server's commands, then the client's (which talk to a running server over its REST API).
COMMANDS = ("run", "worker", "db", "verify", "experiment", "bench",
            "demo", "submit", "tasks", "versions", "segment", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strata", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"services.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StrataError as err:  # bad settings, an unreachable database...: a message, not a traceback
        print(f"strata: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
