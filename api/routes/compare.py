"""GET /models/{name}/compare: version b against version a, class by class, with the policy's verdict
(what the dashboard shows before a promotion or a rollback)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ReadModelDep, SessionDep, StateDep
from api.routes.versions import miou_of
from api.schemas.compare import ComparisonPublic
from services.db.models import ModelVersion
from services.registry.aliases import LATEST, aliases_by_version
from services.registry.classes import colour_hex
from services.registry.compare import compare_versions
from services.registry.versions import VERSION_REF_PATTERN

router = APIRouter(tags=["versions"])
Ref = Annotated[str, Query(max_length=64, pattern=VERSION_REF_PATTERN, description="A version number or an alias.")]


@router.get("/models/{name}/compare", response_model=ComparisonPublic,
            responses={404: {"description": "no such model, version or alias"}})
def compare(model: ReadModelDep, session: SessionDep, state: StateDep, b: Ref = LATEST,
            a: Annotated[str | None, Query(max_length=64, pattern=VERSION_REF_PATTERN, description=(
                "A version number or an alias; default: production, or b's parent when b is production "
                "or nothing is."))] = None) -> dict:
    """Per-class IoU of version ``b`` beside version ``a`` (default: the latest against production),
    sorted by the largest drop, and whether the promotion policy would let b replace a."""
    result = compare_versions(session, state.settings, model, a, b)
    aliases = aliases_by_version(session, model.id)
    return {"model": model.name, "a": _brief(result.a, aliases), "b": _brief(result.b, aliases),
            "classes": [{**vars(c), "hex": colour_hex(c.index)} for c in result.classes],
            "verdict": result.verdict.as_dict()}


def _brief(row: ModelVersion, aliases: dict[int, list[str]]) -> dict:
    return {"version": row.version, "parent": row.parent_version, "method": row.method,
            "miou": miou_of(row), "aliases": aliases.get(row.version, [])}
