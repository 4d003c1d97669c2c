"""The API's periodic chores, every ``outbox_relay_s``: send owed training messages (the outbox
relay, which every worker runs too) and delete the objects of uploads that failed while the
object store was down. Each pass runs in a thread; a dependency still down is logged once per
distinct problem, not every pass, and the next pass tries again."""

from __future__ import annotations

import asyncio
import logging

from api.state import AppState
from services.db.errors import CONNECTION_ERRORS
from services.errors import Unavailable
from services.jobs import outbox, staging

log = logging.getLogger(__name__)


def one_pass(state: AppState) -> None:
    outbox.relay(state.sessions, state.queue.send_training)
    staging.sweep(state.sessions, state.store)


async def run_forever(state: AppState) -> None:
    problem = None
    while True:
        await asyncio.sleep(state.settings.outbox_relay_s)
        try:
            await asyncio.to_thread(one_pass, state)
            problem = None
        except (Unavailable, *CONNECTION_ERRORS) as err:
            if str(err) != problem:
                log.warning("housekeeping: %s", err)
            problem = str(err)
        except Exception:
            log.exception("housekeeping failed")
