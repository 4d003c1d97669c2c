"""The model registry: versions and their lineage, per-class metrics, aliases, promotion policy."""
