"""The one settings object, read from ``STRATA_*`` environment variables.

Embedded defaults need no server: everything lives under ``STRATA_DATA_DIR`` (a SQLite
database, a filesystem object store and a filesystem Celery broker).  Production points
``STRATA_DATABASE_URL`` at Postgres, ``STRATA_BROKER_URL`` at Redis and ``STRATA_S3_*`` at MinIO.

``get_settings()`` reads the environment once per process; a bad or missing value raises
``SettingsError`` whose message names the variable, so a misconfigured process fails at start.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.errors import InvalidInput

ENV_PREFIX = "STRATA_"


class SettingsError(InvalidInput):
    """A setting is missing or malformed; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("./var"), description="Embedded database, objects, broker, cache.")
    database_url: str | None = Field(
        None, description="sqlite:///... or postgresql+psycopg://...; default: SQLite in data_dir."
    )
    broker_url: str | None = Field(
        None, description="redis://... or filesystem://; default: a filesystem broker in data_dir."
    )
    # Redis redelivers an unacknowledged task after this many seconds, so it must exceed the
    # longest training run (tasks are acknowledged late, when they finish).
    broker_visibility_timeout_s: int = Field(12 * 3600, ge=60)
    outbox_relay_s: float = Field(5.0, gt=0, le=3600, description=(
        "Seconds between passes of the outbox relay (API and workers): training messages that could "
        "not be sent, e.g. while the broker was down, are sent this long after it is back."))

    s3_endpoint: str | None = Field(None, description="http(s)://host:port of MinIO/S3; unset = local files.")
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "strata"
    s3_region: str = "us-east-1"

    # --- the API -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- uploads and auth ------------------------------------------------------------------
    max_upload_bytes: int = Field(2 * 1024**3, ge=1024, description="Largest POST /tasks body (413 past it).")
    max_image_bytes: int = Field(50 * 1024**2, ge=1024, description="Largest POST /segment body (413 past it).")
    max_archive_ratio: int = Field(200, ge=1, description="Zip bombs: largest decompressed/compressed ratio.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest image accepted (width x height).")
    stale_if_error_s: float = Field(300.0, ge=0, le=86400, description=(
        "While the database cannot be reached, API keys and models read within this many seconds still "
        "work from memory, so serving survives a database blip (0: off; a 503 at once)."))
    auth_cache_s: float = Field(5.0, ge=0, le=300, description=(
        "An API key checked within this many seconds is not looked up in the database again (each API "
        "process keeps its own; 0: every request asks). A key revoked through another API process keeps "
        "working there for at most this long; the process that revokes it stops it at once."))
    header_timeout_s: float = Field(10.0, gt=0, description=(
        "A client must send a request's headers within this many seconds of starting them (or of connecting)."))
    body_timeout_s: float = Field(30.0, gt=0, description=(
        "A request body that sends nothing for this many seconds is answered 408 and dropped."))
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024, description=(
        "Largest request line + headers: 431 past it (400 while still incomplete)."))
    admin_key: str | None = Field(None, description="Embedded mode: the admin API key (generated if unset).")
    infer_key: str | None = Field(None, description="Embedded mode: the inference API key (generated if unset).")

    # --- model registry --------------------------------------------------------------------
    # A new version becomes `production` automatically only if no old class's mIoU drops by more
    # than this many points (IoU x 100) against its parent; otherwise it waits as a candidate.
    promote_max_old_miou_drop: float = Field(5.0, ge=0)
    auto_promote: bool = True

    # --- what a task that leaves them out gets ---------------------------------------------
    # Chosen so that a machine without a GPU trains a first version in minutes (docs/results.md,
    # "CPU defaults"); GPU deployments set the papers' network and crop (docker-compose.yml).
    # None: the engine's (services/learning/names.py); checked by services.jobs.spec.TaskDefaults.
    default_architecture: str | None = Field(None, description=(
        "The network of a model whose first task names none (default: LR-ASPP MobileNetV3)."))
    default_image_size: int | None = Field(None, ge=32, le=2048, description=(
        "The image_size of a model's first task when its spec leaves it out (later tasks inherit theirs)."))

    # --- inference -------------------------------------------------------------------------
    inference_max_batch: int = Field(8, ge=1)
    inference_max_wait_ms: float = Field(5.0, ge=0)
    inference_device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    segment_max_pixels_in_flight: int = Field(80_000_000, ge=1, description=(
        "Pixels of the images POST /segment decodes and segments at once, over all requests: bounds the "
        "API's memory (tens of bytes per pixel). Requests beyond it wait their turn."))
    segment_queue_timeout_s: float = Field(30.0, gt=0, description=(
        "How long a /segment request waits for its turn before it is answered 503 (Retry-After)."))
    inference_max_loaded: int = Field(4, ge=1, description=(
        "Model versions kept loaded at once, over all models; production versions are kept first."))

    # --- the worker ----------------------------------------------------------------------
    training_queue: str = "training"
    worker_concurrency: int = Field(1, ge=1, description="Training processes per worker: one per GPU.")
    worker_threads: int | None = Field(None, ge=1, le=1024, description=(
        "CPU threads of each training process (OMP_NUM_THREADS); default: the cores shared among the "
        "worker's processes. Set it when several workers share one host's CPUs."))
    gpus_per_task: int = Field(1, ge=1, le=64, description=(
        "GPUs (processes) one training task runs on, with DistributedDataParallel; a worker then needs "
        "worker_concurrency x gpus_per_task GPUs. On a CPU-only host, that many processes share the cores "
        "(gloo). The task's batch_size must be a multiple of it."))
    backbone_weights_dir: Path | None = Field(None, description=(
        "A directory of ImageNet backbone weight files under torchvision's own names (e.g. "
        "mobilenet_v3_large-8738ca79.pth, resnet101-63fe2227.pth), looked in first when a model's first task "
        "asks for a pretrained backbone: what air-gapped workers use instead of a download."))
    train_loader_workers: int | None = Field(None, ge=0, le=64, description=(
        "Loader processes per training process, decoding and augmenting the next batches while the model "
        "trains on this one (0: in the training process). Default: from the cores each training process "
        "has (services/jobs/run.py says how)."))
    train_cache_mb: int = Field(2048, ge=0, description=(
        "Memory a training process may hold its task's decoded training images in (downscaled to the "
        "largest size training draws), so that later epochs skip decoding; a task that needs more is "
        "decoded every epoch. 0 turns the cache off."))

    # --- webhooks (sent by every worker: services/webhooks) ------------------------------
    webhook_poll_s: float = Field(1.0, gt=0, le=3600, description=(
        "Seconds between a worker's looks for webhook deliveries that are due."))
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description=(
        "How long a receiver may take to connect, and between bytes of its answer, before the attempt fails."))
    webhook_max_attempts: int = Field(8, ge=1, le=100, description=(
        "Attempts per delivery; after the last failed one the delivery is given up (status failed)."))
    webhook_backoff_s: float = Field(5.0, gt=0, le=86400, description=(
        "Delay before a delivery's first retry; it doubles with every further failure (with jitter)."))
    webhook_backoff_max_s: float = Field(3600.0, gt=0, le=7 * 86400, description=(
        "The longest delay between two attempts of a delivery."))
    webhook_disable_after: int = Field(20, ge=1, le=100_000, description=(
        "Failed attempts in a row, over all of a subscription's deliveries, after which it is disabled."))

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return v

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "filesystem://", "memory://")):
            raise ValueError("must start with redis://, rediss:// or filesystem://")
        return v

    @field_validator("s3_endpoint")
    @classmethod
    def _check_s3_endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be a URL such as http://127.0.0.1:9000")
        return v

    @model_validator(mode="after")
    def _s3_credentials_go_together(self) -> "Settings":
        if self.s3_endpoint:
            for name in ("s3_access_key", "s3_secret_key"):
                if not getattr(self, name):
                    raise ValueError(f"{ENV_PREFIX}{name.upper()} is required when {ENV_PREFIX}S3_ENDPOINT is set")
        return self

    @model_validator(mode="after")
    def _webhook_backoff_within_its_cap(self) -> "Settings":
        if self.webhook_backoff_s > self.webhook_backoff_max_s:
            raise ValueError(f"{ENV_PREFIX}WEBHOOK_BACKOFF_S ({self.webhook_backoff_s:g}) must not exceed "
                             f"{ENV_PREFIX}WEBHOOK_BACKOFF_MAX_S ({self.webhook_backoff_max_s:g})")
        return self

    # --- derived values (one place that knows the embedded layout) --------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'strata.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def objects_dir(self) -> Path:
        return (self.data_dir / "objects").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.data_dir / "cache").resolve()

    @property
    def embedded(self) -> bool:
        """True when no external server is configured at all."""
        return not (self.database_url or self.broker_url or self.s3_endpoint)


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        var = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{var}: {msg}" if field else msg)
    return "invalid configuration: " + "; ".join(lines)


# Variables a release renamed: set, they would be ignored without a word.
RENAMED = {f"{ENV_PREFIX}INFERENCE_CACHE_SIZE": f"{ENV_PREFIX}INFERENCE_MAX_LOADED"}


def load_settings(**overrides) -> Settings:
    """Read the environment (plus explicit overrides); raise SettingsError naming the variable."""
    for old, new in RENAMED.items():
        if old in os.environ:
            raise SettingsError(f"invalid configuration: {old} was renamed {new} (it now counts the versions of "
                                "every model); set that instead")
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(_explain(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as STRATA_* variables, to hand the same configuration to a child process."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
