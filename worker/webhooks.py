"""The workers' webhook sender: a bootstep of the worker's main process that runs a daemon thread
of passes of ``services.webhooks.delivery`` every ``webhook_poll_s``, for as long as the worker lives,
so events go out while the pool child trains (and whether or not one does).

A thread, not the worker's timer (as the outbox relay): a pass waits on receivers, up to
``webhook_timeout_s`` each, and must not hold the timer. It starts after the pool, so no pool
child is forked while it holds anything. Its engine has no pool (a connection per session) and a
connect timeout: a database that does not answer costs a pass, not the thread. A database or
network outage is logged once per distinct problem, and the next pass tries again.
"""

from __future__ import annotations

import logging
import threading

from celery import bootsteps
from sqlalchemy.pool import NullPool

from services.config import get_settings
from services.db.errors import CONNECTION_ERRORS
from services.db.session import make_engine, make_session_factory
from services.errors import Unavailable
from services.webhooks import delivery

log = logging.getLogger(__name__)
# httpx logs every request at INFO: the failed attempts are logged here, the rest is the delivery log's.
logging.getLogger("httpx").setLevel(logging.WARNING)


class WebhookSender(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.deliverer: delivery.Deliverer | None = None
        self.problem: str | None = None

    def start(self, worker) -> None:
        settings = get_settings()
        connect_args = {} if settings.effective_database_url.startswith("sqlite") else {"connect_timeout": 3}
        sessions = make_session_factory(make_engine(settings, poolclass=NullPool, connect_args=connect_args))
        self.deliverer = delivery.Deliverer(sessions, delivery.Policy.from_settings(settings))
        self.stopping.clear()
        self.thread = threading.Thread(target=self.run, args=(settings.webhook_poll_s,), name="strata-webhooks",
                                       daemon=True)
        self.thread.start()

    def stop(self, worker) -> None:
        if self.thread is None:
            return
        self.stopping.set()
        # A pass in flight finishes its sends (each within the timeout); past that, the daemon
        # thread dies with the process and its claimed deliveries are due again when their lease ends.
        self.thread.join(timeout=3 * get_settings().webhook_timeout_s)
        if not self.thread.is_alive():
            self.deliverer.close()
        self.thread = None

    def run(self, poll_s: float) -> None:
        while not self.stopping.is_set():
            if self.tick() < delivery.BATCH:  # a full batch: more may be due, look again at once
                self.stopping.wait(poll_s)

    def tick(self) -> int:
        try:
            claimed = self.deliverer.run_once()
            self.problem = None
            return claimed
        except (Unavailable, *CONNECTION_ERRORS) as err:  # once per distinct problem, not every pass
            if str(err) != self.problem:
                log.warning("webhook delivery: %s", err)
            self.problem = str(err)
        except Exception as err:  # never let the sender die: the next pass tries again
            if str(err) != self.problem:
                log.exception("webhook delivery failed")
            self.problem = str(err)
        return 0
