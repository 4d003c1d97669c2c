"""No Docker engine runs here: check the compose file's shape against the settings instead."""

from pathlib import Path

import pytest
import yaml

from services.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_stack_has_every_service(compose):
    assert {"postgres", "redis", "minio", "minio-init", "migrate", "api", "worker"} <= set(compose["services"])


@pytest.mark.parametrize("name", ["postgres", "redis", "minio", "api", "worker"])
def test_long_running_services_have_health_checks(compose, name):
    check = compose["services"][name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"] >= 3


def test_strata_variables_are_real_settings(compose):
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    used = set()
    for service in compose["services"].values():
        env = service.get("environment") or {}
        used |= {k for k in env if k.startswith(ENV_PREFIX)}
    assert used, "the stack configures nothing"
    assert used <= fields, f"unknown settings in docker-compose.yml: {sorted(used - fields)}"
    assert {"STRATA_DATABASE_URL", "STRATA_BROKER_URL", "STRATA_S3_ENDPOINT", "STRATA_S3_ACCESS_KEY",
            "STRATA_S3_SECRET_KEY", "STRATA_S3_BUCKET"} <= used


def test_production_urls_use_the_server_drivers(compose):
    env = compose["services"]["api"]["environment"]
    assert env["STRATA_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["STRATA_BROKER_URL"].startswith("redis://")


def test_migrations_run_once_before_api_and_worker(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["strata", "db", "upgrade"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_the_gpu_image_runs_as_a_non_root_user():
    lines = (ROOT / "Dockerfile.gpu").read_text().splitlines()
    assert lines[[i for i, l in enumerate(lines) if l.startswith("FROM")][0]].split()[1].startswith("pytorch/pytorch:")
    users = [l.split()[1] for l in lines if l.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
