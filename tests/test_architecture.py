"""The layering of docs/architecture.md, checked on the source: who may import whom.

Every import statement counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB_AND_QUEUE = ("fastapi", "starlette", "uvicorn", "celery", "kombu", "billiard")
CORE = ("learning", "evaluation", "data", "db", "storage", "broker", "config", "errors", "labels")
APPLICATION = ("jobs", "experiments", "inference", "registry", "auth", "cli")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; the code base uses no relative imports)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            yield node.module or ""
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(package: str, forbidden: tuple[str, ...], only: str = "") -> list[str]:
    found = []
    for path in modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(only):
            continue
        found += [f"{rel} imports {name}" for name in imports(path) if under(name, *forbidden)]
    return sorted(set(found))


def test_the_tree_is_where_these_rules_look() -> None:
    assert len(modules("services")) > 50 and modules("api") and modules("worker")


def test_services_import_no_web_or_queue_framework_and_no_entry_point() -> None:
    assert offenders("services", ("api", "worker", *WEB_AND_QUEUE)) == []


def test_api_and_worker_do_not_import_each_other() -> None:
    assert offenders("api", ("worker",)) == []
    assert offenders("worker", ("api",)) == []


def test_serving_does_not_depend_on_the_job_package() -> None:
    assert offenders("services", ("services.jobs",), only="services/inference/") == []


@pytest.mark.parametrize("package", CORE)
def test_the_core_does_not_import_the_application_layer(package: str) -> None:
    forbidden = tuple(f"services.{p}" for p in APPLICATION)
    path = f"services/{package}"
    assert offenders("services", forbidden, only=path + ("/" if (ROOT / path).is_dir() else ".py")) == []


def test_the_database_session_does_not_import_the_migrations() -> None:
    assert offenders("services", ("services.db.migrate",), only="services/db/session.py") == []


@pytest.mark.parametrize("module", ["services.learning.config", "services.learning.names", "services.cli.main",
                                    "worker.tasks"])
def test_what_parsers_and_the_worker_parent_import_leaves_torch_out(module: str, tmp_path: Path) -> None:
    """CLI parsers and the task spec read the engine's defaults without paying for torch; the
    worker's parent process must never initialise CUDA (its pool children import torch per task)."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    env = {**os.environ, "STRATA_DATA_DIR": str(tmp_path)}  # worker.app prepares its broker folders there
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
