import subprocess
import sys

import pytest

from services.config import Settings, SettingsError, load_settings


def test_embedded_defaults_need_no_server(tmp_path):
    s = load_settings(data_dir=tmp_path)
    assert s.embedded
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'strata.db').resolve()}"
    assert s.effective_broker_url == "filesystem://"
    assert s.s3_endpoint is None and s.objects_dir == (tmp_path / "objects").resolve()


def test_environment_is_read_with_the_prefix(monkeypatch):
    monkeypatch.setenv("STRATA_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("STRATA_PORT", "9123")
    s = load_settings()
    assert s.database_url == "postgresql+psycopg://u@h/db" and s.port == 9123 and not s.embedded


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("STRATA_DATABASE_URL", "mysql://x", "STRATA_DATABASE_URL"),
        ("STRATA_BROKER_URL", "amqp://x", "STRATA_BROKER_URL"),
        ("STRATA_PORT", "not-a-number", "STRATA_PORT"),
        ("STRATA_S3_ENDPOINT", "minio:9000", "STRATA_S3_ENDPOINT"),
        ("STRATA_BROKER_VISIBILITY_TIMEOUT_S", "5", "STRATA_BROKER_VISIBILITY_TIMEOUT_S"),
    ],
)
def test_a_bad_setting_names_its_variable(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_s3_endpoint_without_credentials_names_the_missing_variable(monkeypatch):
    monkeypatch.setenv("STRATA_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("STRATA_S3_ACCESS_KEY", "k")
    with pytest.raises(SettingsError, match="STRATA_S3_SECRET_KEY"):
        load_settings()


def test_the_cli_fails_at_start_naming_the_variable(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "STRATA_DATA_DIR": str(tmp_path), "STRATA_BROKER_URL": "amqp://nope"}
    proc = subprocess.run([sys.executable, "-m", "services.cli.main", "db", "current"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "STRATA_BROKER_URL" in proc.stderr


def test_settings_are_immutable(tmp_path):
    s = load_settings(data_dir=tmp_path)
    with pytest.raises(Exception):
        s.port = 1  # one settings object, read once: nobody mutates it behind the others' backs
    assert isinstance(s, Settings)


def test_a_renamed_variable_is_refused_with_its_new_name(monkeypatch):
    monkeypatch.setenv("STRATA_INFERENCE_CACHE_SIZE", "3")
    with pytest.raises(SettingsError, match="STRATA_INFERENCE_CACHE_SIZE was renamed STRATA_INFERENCE_MAX_LOADED"):
        load_settings()
