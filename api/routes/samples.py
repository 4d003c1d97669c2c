"""Validation samples of a version, for seeing it segment: which images, and each one's original
bytes and ground-truth mask (the mask in the model's class indices, coloured as /segment colours
its masks). Domain code: ``services.jobs.samples``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import ReadModelDep, SessionDep, StateDep
from api.params import DbInt
from api.routes.versions import VersionRef
from api.schemas.versions import SamplePublic
from services.inference.images import encode_mask_png
from services.jobs.samples import item_image, item_mask, lineage_samples, model_item

router = APIRouter(prefix="/models/{name}", tags=["versions"])
PNG = "image/png"
# Items never change (a task's data is immutable), but they are private to the model's readers.
CACHE = {"Cache-Control": "private, max-age=3600"}
ItemId = Annotated[DbInt, Path(description="A dataset item's id (from .../samples).")]
ITEM_NOT_FOUND = {404: {"description": "no such model, or no such item among the model's tasks"}}


@router.get("/versions/{version}/samples", response_model=list[SamplePublic],
            responses={404: {"description": "no such model, version or alias"}})
def get_samples(model: ReadModelDep, version: VersionRef, session: SessionDep,
                limit: Annotated[int, Query(ge=1, le=50, description="How many items at most.")] = 6) -> list:
    """Validation items of the tasks in the version's lineage, round-robin across those tasks
    (newest first) so every task's classes show; the same order every time."""
    return lineage_samples(session, model.id, version, limit)


@router.get("/items/{item_id}/image", response_class=Response, responses={
    200: {"content": {"image/*": {}}, "description": "The image as uploaded."}, **ITEM_NOT_FOUND})
def get_item_image(model: ReadModelDep, item_id: ItemId, session: SessionDep, state: StateDep) -> Response:
    item, _ = model_item(session, model, item_id)
    data, media_type = item_image(state.store, state.settings.cache_dir, item)
    return Response(data, media_type=media_type, headers=CACHE)


@router.get("/items/{item_id}/mask", response_class=Response, responses={
    200: {"content": {PNG: {}}, "description": "8-bit palette PNG: each pixel's value is its class index in the "
                                               "model (255: ignore), the palette the classes' legend colours."},
    **ITEM_NOT_FOUND})
def get_item_mask(model: ReadModelDep, item_id: ItemId, session: SessionDep, state: StateDep) -> Response:
    item, task = model_item(session, model, item_id)
    return Response(encode_mask_png(item_mask(session, state.store, state.settings.cache_dir, item, task)), media_type=PNG, headers=CACHE)
