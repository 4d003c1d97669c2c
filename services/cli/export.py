"""``strata export``: a version as a file for another runtime (ONNX, TorchScript, a Triton model
repository), downloaded through the API's ``GET /models/{name}/versions/{v}/export``, or with
``--from-database`` built here from the database and object store of the settings: the same cache,
built and recorded on first use.

Exit codes: as every client command (``services/cli/remote.py``); with --from-database, 0 written, 2
an error (a flag naming nothing, the database or the store unreachable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from services.cli.remote import client_command, common_flags, need_model, print_json
from services.db.models import ExportFormat
from services.errors import NotFound

T = TypeVar("T")


def _export(args: argparse.Namespace) -> int:
    from services.config import get_settings
    from services.db.migrate import check_database
    from services.db.session import make_engine, make_session_factory
    from services.inference.export_cache import export_version
    from services.registry.models import get_model
    from services.storage import open_store

    output = _output(args.output)  # refused before any work
    started = time.perf_counter()
    settings = get_settings()
    engine = make_engine(settings)
    try:
        check_database(engine)  # unreachable, or not at head: exit 2 with the reason
        store = open_store(settings)
        store.check()
        sessions = make_session_factory(engine)
        with sessions() as session:
            model = _for_flag("--model", lambda: get_model(session, args.model))
        say = _status(f"{model.name} version {args.version} as {args.format}", quiet=args.quiet)
        found = _for_flag("--version", lambda: export_version(
            sessions, store, settings.cache_dir, model.id, model.name, args.version, ExportFormat(args.format), say))
    finally:
        engine.dispose()
    target = output / found.filename if output.is_dir() else output
    _copy(found.path, target)
    how = "exported" if found.built else "from the cache"
    print(f"{target}: {model.name} version {found.record.version} as {args.format} ({how}), "
          f"{found.record.bytes} bytes, sha256 {found.record.sha256}, {time.perf_counter() - started:.1f} s")
    return 0


def _output(text: str | None) -> Path:
    """The file to write, or a directory to write the download's name into (default: here)."""
    path = Path(text) if text else Path.cwd()
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"--output: directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"--output: directory {folder} is not writable")
    return path


def _for_flag(flag: str, action: Callable[[], T]) -> T:
    """``action()``, with a lookup's "not found" said in terms of ``flag``."""
    try:
        return action()
    except NotFound as err:
        raise type(err)(f"{flag}: {err}") from None


def _status(what: str, quiet: bool) -> Callable[[str], None]:
    """A progress line per step on stderr, with the seconds since the start."""
    started = time.perf_counter()

    def say(step: str) -> None:
        if not quiet:
            print(f"strata: {what}: {step} ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)

    return say


def _copy(source: Path, target: Path) -> None:
    """Copy under a temporary name beside ``target``, then rename: never half a file at ``target``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run(args: argparse.Namespace) -> int:
    if not args.from_database:
        return _download(args)
    try:
        if args.url or args.api_key or args.json:
            raise argparse.ArgumentTypeError("--from-database reads the database and object store of the STRATA_* "
                                             "settings itself: --url, --api-key and --json are for the API")
        if not args.model:
            raise argparse.ArgumentTypeError("--model: name the model")
        return _export(args)
    except argparse.ArgumentTypeError as err:  # a flag refused after parsing: the same exit code as argparse's
        print(f"strata export: {err}", file=sys.stderr)
        return 2


@client_command
def _download(args: argparse.Namespace, client) -> int:
    """The version's file from the API (GET /models/{name}/versions/{v}/export), with a download bar."""
    from services.cli.watch import upload_bar

    model = need_model(args)
    output = _output(args.output)
    bar, moved = upload_bar(f"{model} version {args.version} as {args.format}", quiet=args.quiet or args.json)
    try:
        found = client.export(model, args.version, args.format, output, on_download=moved)
    finally:
        bar.close()
    if args.json:
        print_json(found)
    else:
        print(f"{found.path}: {model} version {found.model_version} as {args.format}, {found.bytes} bytes, "
              f"sha256 {found.sha256}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", parents=[common_flags()], help="export a version for another runtime (ONNX, TorchScript, Triton)",
        description="Write a model version as an ONNX model, a TorchScript module or a Triton model repository "
                    "(zip), its contract (classes, colours, preprocessing) embedded, downloaded from the API "
                    "(GET /models/{name}/versions/{v}/export). The first export of a version is checked against "
                    "PyTorch and cached in the object store; later ones are served from there. With "
                    "--from-database it is built here, from the database and object store of the STRATA_* "
                    "settings, without the API (on a server host).")
    p.add_argument("--version", default="production", metavar="V",
                   help="a version number or an alias (default: production)")
    p.add_argument("--format", choices=[f.value for f in ExportFormat], default=ExportFormat.ONNX.value,
                   help="default: onnx")
    p.add_argument("--output", metavar="PATH", help="the file to write, or an existing directory to write "
                                                    "{model}-v{version}.onnx (.pt, -triton.zip) into (default: here)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--from-database", action="store_true",
                   help="build it here from the database and object store (STRATA_* settings), not through the API")
    p.set_defaults(func=_run)
