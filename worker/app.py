"""The Celery application of the workers: configuration only; tasks live in ``worker.tasks``.

``celery -A worker.app worker`` imports this module, which reads the one settings object.
Tasks are acknowledged late and never prefetched, so a worker killed mid-training leaves its
task on the broker for redelivery (Redis: after ``visibility_timeout``, which must therefore
exceed the longest training run). Task names and broker options come from ``services.broker``,
which the API's sending side (``api/queue.py``) uses too.
"""

from __future__ import annotations

from celery import Celery

from services import broker
from services.config import Settings, get_settings
from worker.relay import OutboxRelay
from worker.webhooks import WebhookSender


def create_celery(settings: Settings) -> Celery:
    broker.prepare(settings)
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
        task_routes={broker.TASK_NAMESPACE: {"queue": settings.training_queue}},
        broker_transport_options=broker.transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.steps["worker"].add(OutboxRelay)  # re-sends owed messages while the worker lives
    app.steps["worker"].add(WebhookSender)  # sends webhook deliveries that are due, in a thread of its own
    return app


app = create_celery(get_settings())
