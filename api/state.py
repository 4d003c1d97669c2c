"""What the API process holds open: one engine, one store, the task queue client, the inference service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from api.queue import TaskQueue
from services.auth import Caller
from services.config import Settings
from services.db.last_known import LastKnown
from services.db.models import Model
from services.db.session import make_engine, make_session_factory
from services.inference.admission import PixelBudget
from services.inference.service import InferenceService
from services.jobs.spec import TaskDefaults
from services.storage import ObjectStore, open_store


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker
    store: ObjectStore
    queue: TaskQueue
    inference: InferenceService
    pixels: PixelBudget  # what /segment decodes at once (services/inference/admission.py)
    task_defaults: TaskDefaults  # what a model's first task gets for the spec fields it leaves out
    # Stand-ins while the database is unreachable (stale-if-error): key hash -> caller, name -> model.
    callers: LastKnown[str, Caller] = field(default_factory=lambda: LastKnown(0))
    models: LastKnown[str, Model] = field(default_factory=lambda: LastKnown(0))

    @classmethod
    def open(cls, settings: Settings, on_inference_batch: Callable[[str, int], Any] | None = None) -> "AppState":
        """on_inference_batch: called with the model's name and the size of every inference batch (for metrics)."""
        engine = make_engine(settings)
        sessions = make_session_factory(engine)
        store = open_store(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            store=store,
            queue=TaskQueue(settings),
            inference=InferenceService(settings, sessions, store, on_batch=on_inference_batch),
            pixels=PixelBudget(settings.segment_max_pixels_in_flight, settings.segment_queue_timeout_s),
            task_defaults=TaskDefaults.from_settings(settings),  # a bad STRATA_DEFAULT_ARCHITECTURE stops the start
            callers=LastKnown(settings.stale_if_error_s, fresh_s=settings.auth_cache_s),
            models=LastKnown(settings.stale_if_error_s),
        )

    def close(self) -> None:
        self.engine.dispose()
