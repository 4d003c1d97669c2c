"""Experiments: a class-incremental scenario on a labelled dataset, one method, every step trained
with the service's own ``learning.step.run_step`` and scored (``strata experiment``)."""
