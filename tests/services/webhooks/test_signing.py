"""The Strata-Signature header: what the deliverer signs, a receiver verifies, and what it refuses."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from services.webhooks.signing import InvalidSignature, sign, verify

SECRET = "whsec_0123456789abcdef"
BODY = b'{"id":"e1","event":"task.succeeded","model":"north","data":{"id":"t1"}}'
NOW = 1_800_000_000


def test_a_signed_body_verifies_and_gives_its_timestamp():
    header = sign(SECRET, BODY, NOW)
    assert verify(SECRET, BODY, header, now=NOW + 10) == NOW


def test_the_header_is_the_documented_hmac_of_timestamp_dot_body():
    """What docs/webhooks.md tells receivers to compute with the standard library alone."""
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize("body", [BODY.replace(b"t1", b"t2"), BODY + b" ", b""])
def test_a_tampered_body_is_refused(body):
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(SECRET, body, sign(SECRET, BODY, NOW), now=NOW)


def test_another_secret_is_refused():
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify("whsec_another-secret-0000", BODY, sign(SECRET, BODY, NOW), now=NOW)


def test_a_new_timestamp_on_an_old_signature_is_refused():
    """The timestamp is signed too: a replay cannot be made fresh by changing it."""
    digest = sign(SECRET, BODY, NOW).split("v1=")[1]
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(SECRET, BODY, f"t={NOW + 600},v1={digest}", now=NOW + 600)


@pytest.mark.parametrize("age_s", [301, -301, 86400])
def test_a_timestamp_outside_the_tolerance_is_refused(age_s):
    header = sign(SECRET, BODY, NOW)
    with pytest.raises(InvalidSignature, match="more than 300 s away"):
        verify(SECRET, BODY, header, now=NOW + age_s)
    assert verify(SECRET, BODY, header, tolerance_s=abs(age_s), now=NOW + age_s) == NOW


def test_any_one_of_several_signatures_may_match():
    good = sign(SECRET, BODY, NOW).split("v1=")[1]
    assert verify(SECRET, BODY, f"t={NOW},v1={'0' * 64},v1={good}", now=NOW) == NOW


@pytest.mark.parametrize("header, why", [
    (None, "no Strata-Signature header"),
    ("", "no Strata-Signature header"),
    ("v1=abc", "needs t="),
    (f"t={NOW}", "needs t="),
    ("t=soon,v1=abc", "not a unix time"),
    ("t=١٢٣,v1=abc", "not a unix time"),  # Arabic-Indic digits: isdigit() but not a time
    ("garbage", "not key=value"),
])
def test_a_malformed_header_is_refused_saying_why(header, why):
    with pytest.raises(InvalidSignature, match=why):
        verify(SECRET, BODY, header, now=NOW)


def test_the_standard_library_snippet_of_the_docs_verifies_and_refuses_alike():
    """docs/webhooks.md's verify(), for receivers without Strata, agrees with ours."""
    docs = (Path(__file__).resolve().parents[3] / "docs" / "webhooks.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", docs, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)
    theirs = namespace["verify"]
    theirs(SECRET, BODY, sign(SECRET, BODY))
    for body, header in ((BODY + b" ", sign(SECRET, BODY)), (BODY, sign(SECRET, BODY, NOW))):
        with pytest.raises(ValueError):
            theirs(SECRET, body, header)
