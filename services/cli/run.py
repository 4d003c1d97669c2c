"""``strata run`` (API + one worker) and ``strata api`` (the API alone)."""

from __future__ import annotations

import argparse
import os

from services.cli.processes import api_command, supervise, worker_command
from services.config import Settings, get_settings


def prepare(settings: Settings) -> None:
    """What every start needs: settings the service can use, the schema at head and the object store ready."""
    from services.db.migrate import upgrade
    from services.jobs.spec import TaskDefaults
    from services.storage import open_store

    TaskDefaults.from_settings(settings)  # an unknown STRATA_DEFAULT_ARCHITECTURE: a message, before anything starts
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings)
    open_store(settings).ensure_ready()
    _bootstrap_keys(settings)


def _bootstrap_keys(settings: Settings) -> None:
    """Register injected keys / generate the first ones; print where they are (never the keys)."""
    from services.auth import bootstrap_keys
    from services.db.session import make_engine, make_session_factory, session_scope

    engine = make_engine(settings)
    try:
        with session_scope(make_session_factory(engine)) as session:
            message = bootstrap_keys(settings, session)
    finally:
        engine.dispose()
    if message:
        print(message, flush=True)


def _run(args: argparse.Namespace) -> int:
    settings = get_settings()
    prepare(settings)
    print(f"strata: API on http://{settings.host}:{settings.port} (docs at /docs), "
          f"worker on queue {settings.training_queue!r}; data in {settings.data_dir.resolve()}. Ctrl-C stops both.")
    return supervise({"api": api_command(settings), "worker": worker_command(settings)})


def _api(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not args.no_migrate:
        prepare(settings)
    cmd = api_command(settings)
    os.execv(cmd[0], cmd)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="apply migrations, start the API and one training worker", description=(
        "Apply the database migrations, then start the API (STRATA_HOST:STRATA_PORT, default 127.0.0.1:8000) and "
        "one training worker, on the STRATA_* settings (default: everything embedded under ./var, no server "
        "needed). Prints where the first API keys are. Ctrl-C stops both cleanly."))
    p.set_defaults(func=_run)
    p = sub.add_parser("api", help="start the API only", description=(
        "Start the API alone (uvicorn on STRATA_HOST:STRATA_PORT), after applying the database migrations "
        "unless --no-migrate; run workers with `strata worker`."))
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.set_defaults(func=_api)
