"""Bodies of /webhooks: a subscription (its secret shown once, on creation) and its deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas.models import Description
from services.db.models import DeliveryStatus
from services.registry.models import MODEL_NAME_PATTERN
from services.webhooks.events import ALL, EVENTS
from services.webhooks.subscriptions import MAX_MODELS, MAX_URL_CHARS, SECRET_PATTERN, check_events, check_url

Event = Literal[EVENTS + (ALL,)]  # type: ignore[valid-type]


def _checked(check):
    def validate(value):
        try:
            return check(value)
        except ValueError as err:  # the service's message names the field: pydantic names it again
            raise ValueError(str(err).split(": ", 1)[-1]) from None

    return AfterValidator(validate)


Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS, description=(
    "Where the events are POSTed: an http or https URL."), examples=["https://example.com/strata-hook"]),
    _checked(check_url)]
Events = Annotated[list[Event], Field(min_length=1, max_length=len(EVENTS) + 1, description=(
    f"The events wanted: any of {', '.join(EVENTS)}; or [\"{ALL}\"] for every event, those added later too.")),
    _checked(check_events)]
ModelNames = Annotated[list[Annotated[str, Field(pattern=f"^{MODEL_NAME_PATTERN}$")]], Field(
    min_length=1, max_length=MAX_MODELS, description=(
        "Only these models' events (by name; the models must exist). Leave out (null) for every model's, "
        "and for events of no model."))]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.com/strata-hook", "events": ["task.succeeded", "task.failed", "alias.moved"],
         "models": ["north"], "description": "deploy bot"}]})

    url: Url
    events: Events
    models: ModelNames | None = None
    secret: str | None = Field(None, pattern=f"^{SECRET_PATTERN}$", description=(
        "The key the bodies are signed with (HMAC-SHA256): 16 to 256 printable ASCII characters without spaces. "
        "Leave out to have one generated. Shown in this answer only."))
    description: Description = ""


class WebhookUpdate(BaseModel):
    """Only the fields sent change. ``enabled: true`` on a disabled subscription clears why it was
    disabled and its failure count; its waiting deliveries go out at once."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"enabled": True}, {"url": "https://example.com/new-hook", "events": ["*"]}]})

    url: Url | None = None
    events: Events | None = None
    models: ModelNames | None = Field(None, description="Only these models' events; null: every model's.")
    description: Description | None = None
    enabled: bool | None = Field(None, description="false: nothing is sent until it is true again.")


class WebhookPublic(BaseModel):
    id: int
    url: str
    events: list[str]
    models: list[str] | None = Field(description="The models whose events it gets; None: every model.")
    description: str
    secret_prefix: str = Field(description="The secret's first characters, to recognise it.")
    enabled: bool
    disabled_reason: str | None = Field(description=(
        "Why it is disabled: how many attempts failed in a row, the last error, when; or 'disabled by request'."))
    disabled_at: datetime | None
    consecutive_failures: int = Field(description="Failed attempts in a row, over all its deliveries.")
    created_at: datetime
    created_by_key_id: int | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret. Shown only now: store it, it cannot be read back.")


class DeliveryPublic(BaseModel):
    id: int = Field(description="Grows with every delivery; pass the last one of a page as `before_id` for the next.")
    event: str = Field(description="The event, or 'ping'.")
    event_id: str = Field(description="The body's `id` and the Strata-Delivery header: the same on every attempt.")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When it is tried (again); None once delivered or failed.")
    last_status_code: int | None = Field(description="The receiver's last answer; None: no answer.")
    last_error: str | None = Field(description="What went wrong in the last attempt (None: it was delivered).")
    last_duration_ms: int | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The body sent: id, event, created_at, model, data.")
