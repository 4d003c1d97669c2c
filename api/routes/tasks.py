"""Training tasks: register one for a model with its data (POST /models/{name}/tasks), read a
model's tasks, and, by id across models, read one (GET /tasks/{id}), cancel one, list the queue.

POST /models/{name}/tasks reads its multipart body as a stream: files go straight to a work directory on
disk (hashed on the way), so memory stays bounded whatever the upload; everything blocking
(decoding, hashing, storing, the database) runs in the thread pool.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi import Path as FastApiPath
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.deps import AdminDep, AdminModelDep, ReaderDep, ReadModelDep, SessionDep, StateDep, check_model_access
from api.params import PRINTABLE_ASCII_PATTERN
from api.schemas.tasks import TaskPublic, upload_openapi
from api.state import AppState
from services import audit
from services.auth import Caller
from services.data.multipart import MultipartSpool, Received
from services.db.errors import CONNECTION_ERRORS
from services.db.models import Model, TaskStatus
from services.db.session import session_scope
from services.errors import Unavailable
from services.jobs.lifecycle import get_task, request_cancel
from services.jobs.outbox import dispatch
from services.jobs.registration import IngestLimits, Registration, register_task
from services.jobs.views import TaskView, list_task_views, task_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/tasks", tags=["tasks"])
model_router = APIRouter(prefix="/models/{name}/tasks", tags=["tasks"])

FEED_BYTES = 1024 * 1024  # body bytes handed to the parser thread at a time
SPEC_MAX_BYTES = 256 * 1024
FILE_FIELDS = {"images", "masks", "archive"}


@model_router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskPublic,
    openapi_extra=upload_openapi(),
    responses={
        404: {"description": "no such model"},
        409: {"description": "a class name already exists in the model"},
        413: {"description": "the body, or an archive's content, is over its size limit"},
        422: {"description": "bad spec or files; the message names the file and what is wrong"},
    },
)
async def create_task(
    request: Request,
    response: Response,
    state: StateDep,
    model: AdminModelDep,
    caller: AdminDep,
    idempotency_key: Annotated[str | None, Header(
        pattern=PRINTABLE_ASCII_PATTERN, description="Retrying with the same key and body returns the same task "
        "(1 to 200 printable ASCII characters).")] = None,
) -> TaskView:
    """Register a task of this model: `spec` (JSON) and files `images` + `masks` (paired by stem) or
    one zip `archive` (images/ and masks/). Everything is validated before anything is stored; the
    task is queued behind the model's earlier tasks and answered 202 with a Location header."""
    workdir = await run_in_threadpool(_new_workdir, state.settings.data_dir)
    try:
        received = await _receive(request, workdir)
        registration, view = await run_in_threadpool(_register, state, model.id, received, workdir,
                                                     idempotency_key, caller)
    finally:
        await run_in_threadpool(shutil.rmtree, workdir, True)
    response.headers["Location"] = f"/tasks/{view.id}"
    if not registration.created:
        response.headers["Idempotent-Replayed"] = "true"
    return view


def _new_workdir(data_dir: Path) -> Path:
    base = data_dir / "uploads"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="task-", dir=base))


async def _receive(request: Request, workdir: Path) -> Received:
    spool = MultipartSpool(request.headers.get("content-type", ""), workdir,
                           text_fields={"spec": SPEC_MAX_BYTES}, file_fields=FILE_FIELDS)
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= FEED_BYTES:
                await run_in_threadpool(spool.feed, bytes(pending))
                pending.clear()
        if pending:
            await run_in_threadpool(spool.feed, bytes(pending))
        return spool.finish()
    except ClientDisconnect:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the client disconnected before the upload completed") from None
    finally:
        spool.close()


def _register(state: AppState, model_id: int, received: Received, workdir: Path,
              key: str | None, caller: Caller) -> tuple[Registration, TaskView]:
    registration = register_task(state.sessions, state.store, model_id, received, workdir,
                                 IngestLimits.from_settings(state.settings), idempotency_key=key, actor=caller,
                                 defaults=state.task_defaults)
    if registration.created:
        _enqueue(state, registration.task_id)
    with state.sessions() as session:
        return registration, task_view(session, registration.task_id)


def _enqueue(state: AppState, task_id: str) -> None:
    """Send the task's owed message now; if the broker is down it stays owed and the outbox relay
    sends it once the broker is back (the task is accepted either way: it is committed)."""
    try:
        dispatch(state.sessions, state.queue.send_training, [task_id])
    except (Unavailable, *CONNECTION_ERRORS) as err:
        log.warning("task %s is registered; its message is owed and will be relayed: %s", task_id, err)


StatusQuery = Annotated[TaskStatus | None, Query(alias="status", description="Only tasks in this state.")]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]
TaskId = Annotated[str, FastApiPath(min_length=1, max_length=36, pattern="^[A-Za-z0-9_-]+$")]


@model_router.get("", response_model=list[TaskPublic], responses={404: {"description": "no such model"}})
def read_model_tasks(model: ReadModelDep, session: SessionDep, status_: StatusQuery = None,
                     limit: LimitQuery = 100) -> list[TaskView]:
    """The model's tasks, newest first."""
    return list_task_views(session, status_.value if status_ else None, limit, model_ids=[model.id])


@router.get("", response_model=list[TaskPublic])
def read_tasks(session: SessionDep, caller: ReaderDep, status_: StatusQuery = None,
               limit: LimitQuery = 100) -> list[TaskView]:
    """Tasks of every model this key may use, newest first: the training queue across models."""
    return list_task_views(session, status_.value if status_ else None, limit, model_ids=caller.model_ids)


def _checked_task(session, caller: Caller, task_id: str) -> Model:
    """The task's model; 404 for no such task, 403 when it belongs to a model the key may not use."""
    model = session.get(Model, get_task(session, task_id).model_id)
    check_model_access(caller, model)
    return model


@router.get("/{task_id}", response_model=TaskPublic, responses={404: {"description": "no such task"}})
def read_task(task_id: TaskId, session: SessionDep, caller: ReaderDep) -> TaskView:
    _checked_task(session, caller, task_id)
    return task_view(session, task_id)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskPublic,
    responses={
        200: {"description": "it was queued: cancelled now, its class names and indices released"},
        202: {"description": "it is running: the worker stops at its next step"},
        404: {"description": "no such task"},
        409: {"description": "it already finished"},
    },
)
def cancel(task_id: TaskId, response: Response, state: StateDep, caller: AdminDep) -> TaskView:
    with session_scope(state.sessions) as session:
        model = _checked_task(session, caller, task_id)
        cancelled_now = request_cancel(session, task_id)
        audit.record(session, caller, audit.Action.TASK_CANCEL, model=model, target=f"task {task_id}",
                     detail={"was": (TaskStatus.QUEUED if cancelled_now else TaskStatus.RUNNING).value})
    response.status_code = status.HTTP_200_OK if cancelled_now else status.HTTP_202_ACCEPTED
    with state.sessions() as session:
        return task_view(session, task_id)
