"""The API's periodic chores, every ``outbox_relay_s``: send owed training messages (the outbox
relay, which every worker runs too) and delete the objects of uploads that failed while the
object store was down. Each chore runs in a thread and on its own: one dependency down does not
stop the other chore. A chore that fails is logged once per distinct problem, not every pass, and
the next pass tries again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from api.state import AppState
from services.db.errors import CONNECTION_ERRORS
from services.errors import Unavailable
from services.jobs import staging
from services.jobs.outbox import Relay

log = logging.getLogger(__name__)


async def run_forever(state: AppState) -> None:
    relay = Relay(state.sessions, state.queue.send_training)
    chores: dict[str, Callable[[], object]] = {
        "outbox relay": relay.run_once,
        "failed uploads": lambda: staging.sweep(state.sessions, state.store),
    }
    problems: dict[str, str | None] = dict.fromkeys(chores)
    while True:
        await asyncio.sleep(state.settings.outbox_relay_s)
        for name, chore in chores.items():
            problems[name] = await _run(name, chore, problems[name])


async def _run(name: str, chore: Callable[[], object], problem: str | None) -> str | None:
    """Run one chore; returns the problem it had (None: it went through)."""
    try:
        await asyncio.to_thread(chore)
        return None
    except (Unavailable, *CONNECTION_ERRORS) as err:
        if str(err) != problem:
            log.warning("%s: %s", name, err)
        return str(err)
    except Exception as err:
        log.exception("%s failed", name)
        return str(err)
