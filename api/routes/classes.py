"""A model's classes: index (the mask value), name, display colour and introducing task; with
``?version=`` only that version's classes (the legend of its masks)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ReadModelDep, SessionDep
from api.schemas.versions import ClassPublic
from services.registry.classes import class_colour, colour_hex, list_classes
from services.registry.versions import VERSION_REF_PATTERN, resolve_version

router = APIRouter(prefix="/models/{name}/classes", tags=["classes"])


@router.get("", response_model=list[ClassPublic], responses={404: {"description": "no such model or version"}})
def get_classes(
    model: ReadModelDep, session: SessionDep,
    version: Annotated[str | None, Query(max_length=64, pattern=VERSION_REF_PATTERN, description=(
        "A version number or alias: only the classes that version predicts."))] = None,
) -> list[dict]:
    rows = list_classes(session, model.id)
    if version is not None:
        known = {int(k) for k in resolve_version(session, model.id, version).class_map}
        rows = [c for c in rows if c.id in known]
    return [{"index": c.id, "name": c.name, "color": list(class_colour(c.id)), "hex": colour_hex(c.id),
             "task_id": c.task_id, "created_at": c.created_at} for c in rows]
