"""The access log without secrets: uvicorn logs every request line with its query string, and a
client that puts its key in the URL (``?key=...``, ``?access_token=...``) would leave it there.

Keys are only ever read from the ``Authorization`` header, but a key sent in a URL must not reach a
log either. A filter on uvicorn's access logger rewrites each record before any handler formats it:
the values of auth-like query parameters, and anything shaped like a Strata key, become ``***``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from services.auth import KEY_PREFIX

ACCESS_LOGGER = "uvicorn.access"
# Compared case-insensitively, with '-' read as '_' ("Api-Key" is api_key).
AUTH_PARAMETERS = frozenset({"key", "api_key", "apikey", "token", "access_token", "auth", "authorization",
                             "password", "secret"})
REDACTED = "***"
_PARAMETER = re.compile(r"(?P<start>[?&;])(?P<name>[^=&;#\s\"]+)=(?P<value>[^&;#\s\"]*)")
_KEY_SHAPED = re.compile(rf"{re.escape(KEY_PREFIX)}[A-Za-z0-9_-]{{32,}}")  # under any name, even in a path


def redact(text: str) -> str:
    """``text`` (a request target, or a whole log line) with secret query values replaced."""
    return _KEY_SHAPED.sub(KEY_PREFIX + REDACTED, _PARAMETER.sub(_redact_parameter, text))


def _redact_parameter(found: re.Match[str]) -> str:
    name = unquote_plus(found["name"]).strip().lower().replace("-", "_")
    return f"{found['start']}{found['name']}={REDACTED}" if name in AUTH_PARAMETERS else found[0]


class RedactSecrets(logging.Filter):
    """Rewrites a record's arguments (uvicorn passes the request target as one), or its message when
    it has none; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg)
        return True


def install_access_log_redaction() -> None:
    """Put the filter on uvicorn's access logger (once). uvicorn configures its logging before it
    builds the app, so a filter added now stays for the life of the process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
