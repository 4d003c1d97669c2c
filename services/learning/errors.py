"""The engine's errors about weights, in a module without torch: the API and the CLI name them
(services/jobs/failures.py says what a task's author should change) without loading the engine."""

from __future__ import annotations

from services.errors import InvalidInput, Unavailable

__all__ = ["BackboneWeightsMismatch", "PretrainedWeightsUnavailable"]


class PretrainedWeightsUnavailable(Unavailable):
    """ImageNet backbone weights were asked for but are neither at hand nor downloadable;
    ``file_name`` is torchvision's name for the file that would do."""

    def __init__(self, message: str, *, file_name: str) -> None:
        super().__init__(message)
        self.file_name = file_name


class BackboneWeightsMismatch(InvalidInput):
    """A backbone weights file does not fit the architecture's backbone."""
