"""A model's classes (index, name, introducing task) and the fixed display palette."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import SemanticClass
from services.labels import BACKGROUND_INDEX, MAX_CLASS_INDEX, voc_colour


def list_classes(session: Session, model_id: int) -> list[SemanticClass]:
    """Every class of the model in index order (0 is background, introduced by no task)."""
    stmt = select(SemanticClass).where(SemanticClass.model_id == model_id)
    return list(session.scalars(stmt.order_by(SemanticClass.id)))


def class_colour(index: int) -> tuple[int, int, int]:
    """The display colour of a global class index: the Pascal VOC colour map (``labels.voc_colour``).

    Fixed for all versions (index 0 = black background), distinct for every class index (0..254), so a
    legend stays valid when classes are added.
    """
    if not BACKGROUND_INDEX <= index <= MAX_CLASS_INDEX:
        raise ValueError(f"class index {index} has no colour: indices run from {BACKGROUND_INDEX} to {MAX_CLASS_INDEX}")
    return voc_colour(index)


def colour_hex(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*class_colour(index))
