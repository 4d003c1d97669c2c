"""Alembic revisions, one module each, ids numbered in order (0001, 0002, ...)."""
