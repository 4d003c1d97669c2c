"""A model's versions: list, detail (scores, lineage, forgetting, promotion decision), deletion.

``{version}`` is a version number or an alias name (``production``, ``latest``, ``candidate``, ...).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import AdminDep, AdminModelDep, ReadModelDep, SessionDep, StateDep
from api.schemas.versions import ScoreMatrix, VersionDetail, VersionSummary
from services import audit
from services.db.models import ModelVersion
from services.registry.aliases import aliases_by_version
from services.registry.policy import PromotionDecision
from services.registry.report import VersionReport, describe_version, recorded_decision
from services.registry.scores import score_cells
from services.registry.versions import VERSION_REF_PATTERN, delete_version, list_versions, resolve_version

log = logging.getLogger(__name__)
router = APIRouter(prefix="/models/{name}/versions", tags=["versions"])
scores_router = APIRouter()
NOT_FOUND = {404: {"description": "no such model, version or alias"}}
VersionRef = Annotated[str, Path(max_length=64, pattern=VERSION_REF_PATTERN,
                                 description="A version number or an alias name.")]


def miou_of(row: ModelVersion) -> dict:
    return {"old": row.miou_old, "new": row.miou_new, "all": row.miou_all}


def summary(model_name: str, row: ModelVersion, aliases: list[str], promotion: PromotionDecision) -> dict:
    return {
        "model": model_name, "version": row.version, "parent": row.parent_version, "task_id": row.task_id,
        "architecture": row.architecture, "method": row.method, "num_classes": row.num_classes,
        "miou": miou_of(row), "aliases": aliases, "created_at": row.created_at,
        "checkpoint": {"key": row.checkpoint_key, "sha256": row.checkpoint_sha256, "bytes": row.checkpoint_bytes},
        "promotion": promotion.as_dict(),
    }


def detail(model_name: str, report: VersionReport) -> dict:
    row = report.version
    return {
        **summary(model_name, row, report.aliases, report.promotion),
        "lineage": report.lineage,
        "hyperparameters": row.hyperparameters,
        "iou": {c.name: c.iou for c in report.classes},
        "forgetting": {c.name: c.forgetting for c in report.classes if c.forgetting is not None},
        "classes": [vars(c) for c in report.classes],
    }


@router.get("", response_model=list[VersionSummary], responses={404: {"description": "no such model"}})
def get_versions(model: ReadModelDep, session: SessionDep, state: StateDep) -> list[dict]:
    aliases = aliases_by_version(session, model.id)
    rows = list_versions(session, model.id)
    by_number = {row.version: row for row in rows}
    return [summary(model.name, row, aliases.get(row.version, []),
                    recorded_decision(session, state.settings, model, row, by_number.get(row.parent_version)))
            for row in rows]


@scores_router.get("/models/{name}/scores", response_model=ScoreMatrix, tags=["versions"],
                   responses={404: {"description": "no such model"}})
def get_scores(model: ReadModelDep, session: SessionDep) -> dict:
    """Every version's per-class IoU in one answer (the dashboard's heat map): two reads whatever the
    number of versions, where reading each version's detail walks its lineage."""
    return {"model": model.name, "cells": [vars(c) for c in score_cells(session, model.id)]}


@router.get("/{version}", response_model=VersionDetail, responses=NOT_FOUND)
def get_version(model: ReadModelDep, version: VersionRef, session: SessionDep, state: StateDep) -> dict:
    return detail(model.name, describe_version(session, state.settings, model, version))


@router.delete("/{version}", status_code=status.HTTP_204_NO_CONTENT, responses={
    **NOT_FOUND, 409: {"description": "it is production, a parent of other versions, or tasks are pending"}})
def remove_version(model: AdminModelDep, version: VersionRef, session: SessionDep, state: StateDep,
                   caller: AdminDep) -> Response:
    """Delete a version, its checkpoint and its exports. The production version, and versions
    others descend from, cannot be deleted."""
    row = resolve_version(session, model.id, version)
    objects = delete_version(session, model.id, row.version)
    audit.record(session, caller, audit.Action.VERSION_DELETE, model=model, target=f"version {row.version}",
                 detail={"checkpoint": objects.checkpoint})
    session.commit()
    state.inference.refresh()
    for key in objects.keys:
        try:
            state.store.delete(key)
        except Exception:  # the row is gone: the object is garbage, not a dangling reference
            log.exception("version %s of model %r is deleted but its object %s could not be", row.version,
                          model.name, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
