"""Celery tasks: take ids, re-fetch what they need, delegate to ``services``."""

from __future__ import annotations

from celery.signals import worker_process_init

from services.config import get_settings
from services.db.session import make_engine, make_session_factory, session_scope
from services.heartbeats import record_heartbeat
from worker.app import app

_sessions = None


@worker_process_init.connect
def _fresh_resources_after_fork(**_: object) -> None:
    """Each pool process opens its own database connections (never share them across fork)."""
    global _sessions
    _sessions = None


def sessions():
    global _sessions
    if _sessions is None:
        _sessions = make_session_factory(make_engine(get_settings()))
    return _sessions


@app.task(name="strata.ping")
def ping(token: str) -> str:
    """A round trip through the broker: the worker records the token in its heartbeat row."""
    with session_scope(sessions()) as session:
        record_heartbeat(session, get_settings().training_queue, ping_token=token)
    return token
