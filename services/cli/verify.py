"""``strata verify``: the object store against the database, after a restore (docs/operations.md).

Exit codes: 0 nothing wrong, 1 problems found (each printed), 2 the database or the store cannot be
reached or the arguments are wrong (like every other ``strata`` command's errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.registry.verify import Report

CLEAN, PROBLEMS = 0, 1


def _verify(args: argparse.Namespace) -> int:
    from services.config import get_settings
    from services.db.migrate import check_database
    from services.db.session import make_engine, make_session_factory
    from services.registry.verify import verify
    from services.storage import open_store

    settings = get_settings()
    engine = make_engine(settings)
    try:
        check_database(engine)  # unreachable, or not at head: exit 2 with the reason
        store = open_store(settings)
        store.check()
        report = verify(make_session_factory(engine), store, deep=args.deep, grace_s=args.grace * 60,
                        progress=not args.no_progress and sys.stderr.isatty())
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(_summary(report)))
    return CLEAN if report.ok else PROBLEMS


def _summary(report: Report) -> Iterator[str]:
    how = "sha256" if report.deep else "size"
    yield (f"checked {report.checkpoints} checkpoint(s) (sha256), {report.dataset_objects} dataset object(s) "
           f"({how}), {report.exports} export(s) ({how}), {report.objects} object(s) in the store")
    if report.training_states or report.staged or report.recent:
        yield (f"not judged: {report.training_states} training state(s) of queued or running tasks, "
               f"{report.staged} object(s) of uploads in flight or awaiting cleanup, "
               f"{report.recent} object(s) younger than the grace period")
    for p in report.problems:
        where = [f"model {p.model}" if p.model else "",
                 f"version {p.version}" if p.version is not None else f"task {p.task_id}" if p.task_id else ""]
        yield f"{p.kind}: {', '.join(w for w in where if w) or 'no model'}: {p.key}: {p.detail}"
    yield f"{len(report.problems)} problem(s)" if report.problems else "no problems"


def _minutes(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of minutes >= 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check the object store against the database (run it after a restore)",
                       description="Every version's checkpoint is read and checked against its recorded size and "
                                   "sha256, every dataset image and mask and version export against its size (and "
                                   "sha256 with --deep); "
                                   "objects no row names are orphans. Exit 0: clean, 1: problems, 2: an error.")
    p.add_argument("--deep", action="store_true", help="also hash every dataset image and mask and every export (reads them all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--grace", type=_minutes, default=10, metavar="MINUTES",
                   help="objects no row names yet are not orphans while younger than this: a checkpoint is stored "
                        "before its row commits (default 10; 0 when the service is stopped)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal's stderr)")
    p.set_defaults(func=_verify)
