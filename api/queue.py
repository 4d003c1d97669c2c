"""The API's side of the broker: a small client that sends tasks to the workers, built from the
API's own Settings (it never imports the workers' code)."""

from __future__ import annotations

from celery import Celery

from services import broker
from services.config import Settings


class TaskQueue:
    """Sends ``strata.*`` messages to the training queue; checks the broker for /readyz."""

    def __init__(self, settings: Settings) -> None:
        broker.prepare(settings)
        self.settings = settings
        self.app = Celery("strata-api", broker=settings.effective_broker_url, set_as_current=False)
        self.app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                             broker_transport_options=broker.transport_options(settings),
                             broker_connection_retry_on_startup=True,
                             broker_connection_timeout=broker.CONNECT_TIMEOUT_S)

    def send_training(self, task_id: str) -> None:
        self._send(broker.TRAIN_TASK, task_id)

    def send_ping(self, token: str) -> None:
        self._send(broker.PING_TASK, token)

    def _send(self, name: str, arg: str) -> None:
        try:
            self.app.send_task(name, args=[arg], queue=self.settings.training_queue,
                               retry_policy=broker.SEND_RETRY_POLICY)
        except Exception as err:  # kombu, redis-py and OSError all mean the same to a caller
            raise broker.BrokerUnavailable(f"the broker did not take {name} for {arg}: "
                                           f"{type(err).__name__}: {err}") from err

    def check(self, timeout_s: float = 3.0) -> None:
        """Raise if the broker cannot be reached (and, for the filesystem broker, written to)."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
        if broker.uses_filesystem(self.settings):
            queue_dir, _ = broker.filesystem_dirs(self.settings)
            (queue_dir / ".probe").write_text("ok")  # the folder must be writable to enqueue
