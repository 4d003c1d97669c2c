"""What the API and the workers agree on about the broker: the task names, and how to reach the
broker the settings name. Plain values, no Celery: ``api/queue.py`` (the API's sending side) and
``worker/app.py`` (the workers) each build their Celery app from them.

Messages carry ids only; the job's state lives in our own tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import Unavailable

TRAIN_TASK = "strata.train"  # args: [task_id]; trains the task's version
PING_TASK = "strata.ping"  # args: [token]; the worker records the token in its heartbeat row
TASK_NAMESPACE = "strata.*"  # every task above, routed to the training queue


class BrokerUnavailable(Unavailable):
    """The broker did not take a message (down, unreachable, or its folder not writable)."""

    dependency = "broker"


# How hard a sender tries before giving up (kombu's retry_policy): about 1 s in all, so a request
# that sends is answered 503 quickly when the broker is down; the outbox re-sends what is owed.
CONNECT_TIMEOUT_S = 2.0
SEND_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3, "interval_max": 0.5}


def uses_filesystem(settings: Settings) -> bool:
    return settings.effective_broker_url.startswith("filesystem://")


def transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu's transport options for the configured broker."""
    if uses_filesystem(settings):
        # Producer (API) and consumer (worker) share one folder: in and out are the same.
        queue_dir, control_dir = filesystem_dirs(settings)
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),  # kombu's default is ./control in the cwd
            "store_processed": False,
        }
    if settings.effective_broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.broker_visibility_timeout_s}
    return {}


def filesystem_dirs(settings: Settings) -> tuple[Path, Path]:
    """The filesystem broker's queue and control folders (both under ``broker_dir``)."""
    return settings.broker_dir / "queue", settings.broker_dir / "control"


def prepare(settings: Settings) -> None:
    """Create what the broker needs on this machine before anything is sent or consumed: the
    filesystem broker's folders (a server broker needs nothing)."""
    if uses_filesystem(settings):
        for folder in filesystem_dirs(settings):
            folder.mkdir(parents=True, exist_ok=True)
