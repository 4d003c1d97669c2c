"""The workers' outbox relay: a bootstep of the worker's main process that sends owed training
messages every ``outbox_relay_s`` (``services.jobs.outbox``), for as long as the worker lives.

It runs on the worker's own timer (the main process's event loop with Redis, Celery's timer
thread with the filesystem broker), not in a thread of ours. Its engine has no pool (a connection
per pass), so a pool child forked in between inherits no open connection of the parent's, and a
connect timeout, so a database that does not answer cannot hold the worker's timer for long.
"""

from __future__ import annotations

import logging

from celery import bootsteps
from sqlalchemy.pool import NullPool

from services.broker import TRAIN_TASK, BrokerUnavailable
from services.config import get_settings
from services.db.errors import CONNECTION_ERRORS
from services.db.session import make_engine, make_session_factory
from services.errors import Unavailable
from services.jobs import outbox

log = logging.getLogger(__name__)


class OutboxRelay(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.tref = None
        self.relay: outbox.Relay | None = None
        self.problem: str | None = None

    def start(self, worker) -> None:
        settings = get_settings()
        connect_args = {} if settings.effective_database_url.startswith("sqlite") else {"connect_timeout": 3}
        sessions = make_session_factory(make_engine(settings, poolclass=NullPool, connect_args=connect_args))
        self.relay = outbox.Relay(sessions, lambda task_id: _send(worker.app, settings, task_id))
        self.tref = worker.timer.call_repeatedly(settings.outbox_relay_s, self.tick)

    def stop(self, worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def tick(self) -> None:
        try:
            self.relay.run_once()
            self.problem = None
        except (Unavailable, *CONNECTION_ERRORS) as err:  # once per distinct problem, not every tick
            if str(err) != self.problem:
                log.warning("outbox relay: %s", err)
            self.problem = str(err)
        except Exception:  # never let the relay take the worker down
            log.exception("outbox relay failed")


def _send(app, settings, task_id: str) -> None:
    try:
        app.send_task(TRAIN_TASK, args=[task_id], queue=settings.training_queue, retry=False)
    except Exception as err:
        raise BrokerUnavailable(f"{type(err).__name__}: {err}") from err
