"""Model versions: list, detail (scores, lineage, forgetting, promotion decision), promotion and
rollback, and the colour legend of a version's masks.

``{version}`` is a version number or an alias name (``production``, ``latest``).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminDep, ReaderDep, SessionDep, SettingsDep, StateDep
from api.schemas.models import LegendEntry, ModelDetail, ModelSummary, Promoted
from services.db.models import ModelVersion
from services.registry.aliases import PRODUCTION, aliases_by_version, promote
from services.registry.classes import class_colour, colour_hex
from services.registry.report import VersionReport, describe_version
from services.registry.versions import list_versions, resolve_version

router = APIRouter(prefix="/models", tags=["models"])
NOT_FOUND = {404: {"description": "no such version or alias"}}


def _summary(row: ModelVersion, aliases: list[str]) -> dict:
    return {
        "version": row.version, "parent": row.parent_version, "task_id": row.task_id,
        "architecture": row.architecture, "method": row.method, "num_classes": row.num_classes,
        "miou": {"old": row.miou_old, "new": row.miou_new, "all": row.miou_all},
        "aliases": aliases, "created_at": row.created_at,
    }


def _detail(report: VersionReport) -> dict:
    row = report.version
    return {
        **_summary(row, report.aliases),
        "lineage": report.lineage,
        "hyperparameters": row.hyperparameters,
        "checkpoint": {"key": row.checkpoint_key, "sha256": row.checkpoint_sha256, "bytes": row.checkpoint_bytes},
        "iou": {c.name: c.iou for c in report.classes},
        "forgetting": {c.name: c.forgetting for c in report.classes if c.forgetting is not None},
        "classes": [vars(c) for c in report.classes],
        "promotion": report.promotion.as_dict(),
    }


@router.get("", response_model=list[ModelSummary])
def get_models(session: SessionDep, _: ReaderDep) -> list[dict]:
    aliases = aliases_by_version(session)
    return [_summary(row, aliases.get(row.version, [])) for row in list_versions(session)]


@router.get("/{version}", response_model=ModelDetail, responses=NOT_FOUND)
def get_model(version: str, session: SessionDep, settings: SettingsDep, _: ReaderDep) -> dict:
    return _detail(describe_version(session, settings, version))


@router.post("/{version}/promote", response_model=Promoted, responses=NOT_FOUND)
def promote_model(version: str, session: SessionDep, state: StateDep, _: AdminDep) -> dict:
    """Point ``production`` at this version; promoting an older version is a rollback."""
    row = resolve_version(session, version)
    previous = promote(session, row.version)
    session.commit()
    state.inference.refresh()  # load and swap in the new production model now, not at the next poll
    return {"alias": PRODUCTION, "version": row.version, "previous": previous}


@router.get("/{version}/classes", response_model=list[LegendEntry], responses=NOT_FOUND)
def get_legend(version: str, session: SessionDep, _: ReaderDep) -> list[dict]:
    """The legend of this version's masks: each class's mask value, name and display colour."""
    row = resolve_version(session, version)
    return [{"index": i, "name": name, "color": list(class_colour(i)), "hex": colour_hex(i)}
            for i, name in sorted((int(k), v) for k, v in row.class_map.items())]
