"""Strata's Python client: ``Strata`` talks to a running service over its REST API (see ``http``)."""

from services.client.config import ClientConfig, load_config
from services.client.http import ApiError, ServerUnreachable, Strata

__all__ = ["ApiError", "ClientConfig", "ServerUnreachable", "Strata", "load_config"]
