"""Bodies of /audit: one admin action, who did it and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.audit import Action


class AuditEventPublic(BaseModel):
    id: int = Field(description="Grows with every event; pass the last one of a page as `before_id` for the next.")
    at: datetime
    action: Action
    key_id: int | None = Field(description="The API key that acted; None: the service itself (an automatic "
                                           "promotion after training).")
    key_name: str | None = Field(description="The key's name when it acted.")
    key_prefix: str | None = Field(description="The key's first characters.")
    model: str | None = Field(description="The model's name when it happened (None: keys).")
    target: str | None = Field(description="What was acted on: 'task 3f2a...', 'version 3', 'alias candidate', "
                                           "'key 7', 'model north'.")
    detail: dict[str, Any] = Field(description=(
        "What changed, e.g. {'from': 2, 'to': 3} for a move of production ('automatic': true when the "
        "promotion policy moved it), {'description': {'from': '', 'to': 'gate'}} for a model change."))
