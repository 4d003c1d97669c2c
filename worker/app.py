"""The Celery application: configuration only; tasks live in ``worker.tasks``.

``celery -A worker.app worker`` imports this module, which reads the one settings object.
Tasks are acknowledged late and never prefetched, so a worker killed mid-training leaves its
task on the broker for redelivery (Redis: after ``visibility_timeout``, which must therefore
exceed the longest training run).
"""

from __future__ import annotations

from celery import Celery

from services.config import Settings, get_settings


def broker_transport_options(settings: Settings) -> dict:
    url = settings.effective_broker_url
    if url.startswith("filesystem://"):
        # Producer (API) and consumer (worker) share one folder: in and out are the same.
        queue_dir, control_dir = settings.broker_dir / "queue", settings.broker_dir / "control"
        for d in (queue_dir, control_dir):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),  # kombu's default is ./control in the cwd
            "store_processed": False,
        }
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.broker_visibility_timeout_s}
    return {}


def create_celery(settings: Settings) -> Celery:
    app = Celery("strata", broker=settings.effective_broker_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job state lives in our own tables, not in a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=settings.training_queue,
        task_routes={"strata.*": {"queue": settings.training_queue}},
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = create_celery(get_settings())


def check_broker(celery_app: Celery, timeout_s: float = 3.0) -> None:
    """Raise if the broker cannot be reached (used by /readyz)."""
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        if conn.transport_cls == "filesystem" or conn.transport.driver_type == "filesystem":
            folder = celery_app.conf.broker_transport_options["data_folder_in"]
            with open(f"{folder}/.probe", "w") as fh:  # the folder must be writable to enqueue
                fh.write("ok")
