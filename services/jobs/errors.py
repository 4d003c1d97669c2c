"""What can go wrong with a training task, in the domain's error categories (``services.errors``)."""

from __future__ import annotations

from services.errors import Conflict, InvalidInput, NotFound


class TaskNotFound(NotFound):
    """No task with that id."""


class TaskFinished(Conflict):
    """The task already finished: nothing to cancel."""


class RegistrationConflict(Conflict):
    """The request contradicts the service's state: a class name that already exists, no version
    in production to add classes to, no class indices left."""


class IdempotencyMismatch(InvalidInput):
    """An Idempotency-Key reused with a different request."""


class NotReady(Exception):
    """Not a domain error: the task waits (for the step before it, or for another worker to let
    go of it); the worker tries again later."""


class ItemNotFound(NotFound):
    """No dataset item with that id among the model's tasks."""
