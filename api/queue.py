"""The API's side of the broker: a small client that sends tasks to the workers, built from the
API's own Settings (it never imports the workers' code), and the API's outbox relay."""

from __future__ import annotations

import asyncio
import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from services import broker
from services.config import Settings
from services.db.errors import CONNECTION_ERRORS
from services.errors import Unavailable
from services.jobs import outbox

log = logging.getLogger(__name__)


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

    async def relay_forever(self, sessions: sessionmaker[Session]) -> None:
        """Send owed training messages every ``outbox_relay_s`` (the workers run the same relay):
        a task accepted while the broker was down leaves as soon as it is back."""
        problem = None
        while True:
            await asyncio.sleep(self.settings.outbox_relay_s)
            try:
                await asyncio.to_thread(outbox.relay, sessions, self.send_training)
                problem = None
            except (Unavailable, *CONNECTION_ERRORS) as err:  # still down: say so once per distinct problem, not every pass
                if str(err) != problem:
                    log.warning("outbox relay: %s", err)
                problem = str(err)
            except Exception:
                log.exception("outbox relay failed")
