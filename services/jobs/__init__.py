"""The training task, its one home: the spec (``spec``), registration with its data
(``registration``), every status change (``lifecycle``), the API's views (``views``), and what a
worker does with it: ``claim``, ``plan``, ``datasets``, ``run`` (through ``learning.step``),
``progress``, ``heartbeats``, ``record``, and ``recovery`` of lost messages."""
