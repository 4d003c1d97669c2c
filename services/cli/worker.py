"""``strata worker``: one Celery worker on the training queue (run one per GPU)."""

from __future__ import annotations

import argparse
import os

from services.cli.processes import worker_command
from services.config import get_settings


def _worker(args: argparse.Namespace) -> int:
    cmd = worker_command(get_settings())
    os.execv(cmd[0], cmd)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="start a training worker (one per GPU)")
    p.set_defaults(func=_worker)
