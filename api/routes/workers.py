"""Workers as they report themselves, and a round-trip probe through the broker."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel

from api.deps import AdminDep, ReaderDep, SessionDep, StateDep
from api.params import TOKEN_PATTERN, DbInt
from services.jobs.heartbeats import find_ping, list_workers

router = APIRouter(prefix="/workers", tags=["workers"])


class WorkerPublic(BaseModel):
    hostname: str
    pid: int
    queue: str
    last_seen: datetime
    current_task_id: str | None


class PingPublic(BaseModel):
    token: str
    answered_by: str | None = None
    answered_at: datetime | None = None


@router.get("", response_model=list[WorkerPublic])
def read_workers(session: SessionDep, _: ReaderDep, seen_within_s: Annotated[DbInt | None, Query(
        description="Only workers heard from within this many seconds.")] = None) -> list:
    within = timedelta(seconds=seen_within_s) if seen_within_s is not None else None
    return list_workers(session, seen_within=within)


@router.post("/ping", status_code=status.HTTP_202_ACCEPTED, response_model=PingPublic)
def send_ping(state: StateDep, _: AdminDep) -> PingPublic:
    """Enqueue a ping on the training queue; GET /workers/ping/{token} tells who answered."""
    token = uuid.uuid4().hex
    state.queue.send_ping(token)
    return PingPublic(token=token)


@router.get("/ping/{token}", response_model=PingPublic, responses={404: {"description": "no worker answered it (yet)"}})
def read_ping(token: Annotated[str, Path(pattern=TOKEN_PATTERN, description="The token POST /workers/ping gave.")],
              session: SessionDep, _: ReaderDep) -> PingPublic:
    row = find_ping(session, token)
    return PingPublic(token=token, answered_by=row.hostname, answered_at=row.last_seen)
