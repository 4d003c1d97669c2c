"""The Alembic migration history of the Strata database (run it with ``strata db upgrade``).

This package is the Alembic script location; ``services.db.migrate`` builds the Alembic
configuration in code, so there is no alembic.ini.
"""
