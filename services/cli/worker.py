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
    p = sub.add_parser("worker", help="start a training worker (one per GPU)", description=(
        "Start a Celery training worker on STRATA_TRAINING_QUEUE with STRATA_WORKER_CONCURRENCY processes (one per "
        "GPU) and the STRATA_* settings; it also relays owed training messages. Stop it with SIGTERM or Ctrl-C: "
        "a task it is training is handed back and resumes from its last epoch elsewhere."))
    p.set_defaults(func=_worker)
