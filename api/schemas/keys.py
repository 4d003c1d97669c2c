"""Bodies of /keys. Hashes never leave the server; the plaintext appears once, on creation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Scope = Literal["admin", "infer"]


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="What the key is for, e.g. 'labelling tool'.")
    scopes: list[Scope] = Field(min_length=1, description="'admin': tasks, promotion, keys; 'infer': /segment.")


class KeyPublic(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself. Shown only now: store it, it cannot be read back.")
