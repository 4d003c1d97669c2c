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
CORE = ("learning", "evaluation", "data", "db", "storage", "broker", "config", "errors", "labels", "text")
RECORDS = ("registry", "auth", "audit", "webhooks")
APPLICATION = ("jobs", "experiments", "inference", "cli")


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


@pytest.mark.parametrize("package, above", [*((p, RECORDS + APPLICATION) for p in CORE),
                                            *((p, APPLICATION) for p in RECORDS)])
def test_no_package_imports_a_layer_above_its_own(package: str, above: tuple[str, ...]) -> None:
    path = f"services/{package}"
    only = path + ("/" if (ROOT / path).is_dir() else ".py")
    assert offenders("services", tuple(f"services.{p}" for p in above), only=only) == []


@pytest.mark.parametrize("package", ["services.jobs", "services.experiments", "services.inference"])
def test_the_application_packages_do_not_import_each_other(package: str) -> None:
    others = tuple(p for p in ("services.jobs", "services.experiments", "services.inference") if p != package)
    assert offenders("services", others, only=package.replace(".", "/") + "/") == []


def test_the_foundation_imports_nothing_but_itself() -> None:
    ours = ("services", "api", "worker", "migrations")
    foundation = tuple(f"services.{p}" for p in ("config", "errors", "labels", "text"))
    for name in ("config", "errors", "labels", "text"):
        imported = [m for m in imports(ROOT / "services" / f"{name}.py") if under(m, *ours)]
        assert all(under(m, *foundation) for m in imported), (name, imported)


def test_the_database_session_does_not_import_the_migrations() -> None:
    assert offenders("services", ("services.db.migrate",), only="services/db/session.py") == []


@pytest.mark.parametrize("module", ["services.learning.config", "services.learning.names", "services.cli.main",
                                    "worker.tasks", "services.client"])
def test_what_parsers_and_the_worker_parent_import_leaves_torch_out(module: str, tmp_path: Path) -> None:
    """CLI parsers and the task spec read the engine's defaults without paying for torch; the
    worker's parent process must never initialise CUDA (its pool children import torch per task)."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    env = {**os.environ, "STRATA_DATA_DIR": str(tmp_path)}  # worker.app prepares its broker folders there
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_client_talks_http_only() -> None:
    """services/client is what users import to reach a server: the error vocabulary and the name of the
    key file `make run` writes (services.auth), never the domain behind the API."""
    allowed = ("services.client", "services.errors", "services.auth")
    found = [f"{f.relative_to(ROOT)} imports {m}" for f in modules("services/client") for m in imports(f)
             if under(m, "services") and not under(m, *allowed)]
    assert found == []


@pytest.mark.parametrize("package", ["db", "storage", "broker"])
def test_the_infrastructure_packages_build_on_the_foundation_only(package: str) -> None:
    allowed = (f"services.{package}", "services.config", "services.errors", "services.labels")
    path = ROOT / "services" / package
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    found = [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in imports(f)
             if under(m, "services") and not under(m, *allowed)]
    assert found == []
