"""A key in a query string never reaches the access log: the filter on real log records, and the API
started as a process the way ``strata api`` starts it, its log read back."""

from __future__ import annotations

import logging

import httpx
import pytest

from api.access_log import ACCESS_LOGGER, RedactSecrets, install_access_log_redaction, redact
from tests.servers import ApiProcess

KEY = "strata_" + "k3Y" * 14  # shaped like a generated key


@pytest.mark.parametrize("target, logged", [
    ("/models?key=s3cret&limit=5", "/models?key=***&limit=5"),
    ("/x?API_KEY=a&Api-Key=b&apikey=c&token=d&Access_Token=e", "/x?API_KEY=***&Api-Key=***&apikey=***&token=***&"
                                                              "Access_Token=***"),
    ("/x?auth=a&Authorization=Bearer%20b&password=c&secret=d", "/x?auth=***&Authorization=***&password=***&secret=***"),
    ("/x?%6Bey=a", "/x?%6Bey=***"),  # the name as the app would decode it
    ("/x?limit=5&keys=2&monkey=3&key", "/x?limit=5&keys=2&monkey=3&key"),  # other names, and no value, stay
    (f"/x?q={KEY}", "/x?q=strata_***"),  # a key under any name
    (f"/models/{KEY}/segment", "/models/strata_***/segment"),
    ("/models/strata_cam/segment?version=2", "/models/strata_cam/segment?version=2"),
])
def test_secret_query_values_are_redacted(target, logged):
    assert redact(target) == logged


def test_the_filter_rewrites_uvicorn_records_before_they_are_formatted():
    logger = logging.getLogger(ACCESS_LOGGER)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    install_access_log_redaction()
    install_access_log_redaction()  # once is enough: a second app in the same process adds nothing
    assert sum(isinstance(f, RedactSecrets) for f in logger.filters) == 1
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:  # uvicorn's own call (protocols/http/h11_impl.py)
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/models?key={KEY}&limit=2", "1.1", 200)
        logger.info(f'127.0.0.1:5000 - "GET /models?token={KEY} HTTP/1.1" 200')
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines == ['127.0.0.1:5000 - "GET /models?key=***&limit=2 HTTP/1.1" 200',
                     '127.0.0.1:5000 - "GET /models?token=*** HTTP/1.1" 200']


def test_the_api_process_logs_no_key_sent_in_a_url(prepared, tmp_path):
    """The API as ``strata api`` starts it (uvicorn's own logging set-up, access log on)."""
    log = tmp_path / "api.log"
    with ApiProcess(prepared, log) as api:
        assert httpx.get(f"{api.url}/models?key={KEY}&limit=1", timeout=10).status_code == 401
        assert httpx.get(f"{api.url}/healthz?access_token=plain-secret&x=1", timeout=10).status_code == 200
    text = log.read_text()
    assert "GET /models?key=***&limit=1 HTTP/1.1" in text and "GET /healthz?access_token=***&x=1" in text, text
    assert KEY not in text and KEY[7:] not in text and "plain-secret" not in text
