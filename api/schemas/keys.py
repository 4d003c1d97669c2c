"""Bodies of /keys. Hashes never leave the server; the plaintext appears once, on creation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.registry.models import MODEL_NAME_PATTERN

Scope = Literal["admin", "infer", "read"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "camera 7 inference", "scopes": ["infer"], "models": ["street-cam-7"]}]})

    name: str = Field(min_length=1, max_length=128, description="What the key is for, e.g. 'labelling tool'.")
    scopes: list[Scope] = Field(min_length=1, description=(
        "'admin': models, tasks, aliases (and keys, for a key of every model); 'infer': segmentation and "
        "reading; 'read': reading only."))
    models: list[Annotated[str, Field(pattern=f"^{MODEL_NAME_PATTERN}$")]] | None = Field(
        None, min_length=1, max_length=1000, description=(
        "Limit the key to these models (by name); leave out for every model."))


class KeyPublic(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scopes: list[str]
    models: list[str] | None = Field(description="The models the key is limited to; None: every model.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself. Shown only now: store it, it cannot be read back.")
