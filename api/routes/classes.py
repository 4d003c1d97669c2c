"""Every known class with its global index and the task that introduced it."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ReaderDep, SessionDep
from api.schemas.models import ClassPublic
from services.registry.classes import list_classes

router = APIRouter(prefix="/classes", tags=["classes"])


@router.get("", response_model=list[ClassPublic])
def get_classes(session: SessionDep, _: ReaderDep) -> list[dict]:
    return [{"index": c.id, "name": c.name, "task_id": c.task_id, "created_at": c.created_at}
            for c in list_classes(session)]
