"""``strata db ...`` as separate processes, the way deployments run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from services.config import Settings
from services.db import migrate

REPO_ROOT = Path(__file__).resolve().parents[3]


def strata(*args: str, database_url: str, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "STRATA_DATABASE_URL": database_url, "STRATA_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_upgrades(db_settings: Settings, engine: Engine) -> None:
    """API, worker and a migration job starting together: all succeed, the schema is migrated once."""
    url = db_settings.effective_database_url
    procs = [strata("db", "upgrade", database_url=url, data_dir=db_settings.data_dir) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"stdout: {out}\nstderr: {err}"
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [migrate.head_revision()]


def test_current_and_downgrade(db_settings: Settings) -> None:
    url, data_dir = db_settings.effective_database_url, db_settings.data_dir
    out, _ = strata("db", "current", database_url=url, data_dir=data_dir).communicate(timeout=60)
    assert out.startswith("base")
    migrate.upgrade(db_settings)
    out, _ = strata("db", "current", database_url=url, data_dir=data_dir).communicate(timeout=60)
    assert out.strip() == f"{migrate.head_revision()} (head)"
    proc = strata("db", "downgrade", "base", database_url=url, data_dir=data_dir)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert migrate.current(db_settings) is None


@pytest.mark.parametrize(
    "bad_url",
    [
        "mysql://root@127.0.0.1/strata",  # not a supported scheme
        "postgresql+psycopg://nobody:secret@127.0.0.1:1/strata",  # nothing listens there
    ],
)
def test_bad_database_url_fails_upgrade(bad_url: str, tmp_path: Path) -> None:
    proc = strata("db", "upgrade", database_url=bad_url, data_dir=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, f"stdout: {out}\nstderr: {err}"
    assert "STRATA_DATABASE_URL" in err
    assert "Traceback" not in err and "secret" not in err
