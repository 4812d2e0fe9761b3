"""HMAC request signing (contract §1): the rules both the ingest server and the billing API enforce."""

from __future__ import annotations

import re

import pytest

from dunning.signing import SIGNATURE_HEADER, SignatureError, sign, verify

SECRET = "whsec_test"
BODY = b'{"id":"evt_1","type":"invoice.paid"}'
NOW = 1_800_000_000


def test_header_name_matches_contract() -> None:
    assert SIGNATURE_HEADER == "Dunning-Signature"


def test_sign_then_verify_round_trips_and_returns_timestamp() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    assert re.fullmatch(rf"t={NOW},v1=[0-9a-f]{{64}}", header)
    assert verify(SECRET, BODY, header, now=NOW + 10) == NOW


def test_sign_defaults_to_current_time() -> None:
    assert verify(SECRET, BODY, sign(SECRET, BODY)) > 0


def test_known_vector() -> None:
    # Pins the construction for producers in other languages: printf '1.{}' | openssl dgst -sha256 -hmac s
    expected = "b253639bcd705ed1cda3073f66104f16988bd40272584dea7d0d345ae93e61cc"
    assert sign("s", b"{}", timestamp=1) == f"t=1,v1={expected}"


@pytest.mark.parametrize("body", [BODY + b" ", BODY.replace(b"paid", b"void"), b""])
def test_tampered_body_is_refused(body: bytes) -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(SECRET, body, header, now=NOW)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify("other", BODY, sign(SECRET, BODY, timestamp=NOW), now=NOW)


def test_stale_timestamp_is_refused_just_past_tolerance() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    assert verify(SECRET, BODY, header, now=NOW + 300) == NOW
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, BODY, header, now=NOW + 301)


def test_future_timestamp_beyond_tolerance_is_refused() -> None:
    header = sign(SECRET, BODY, timestamp=NOW + 301)
    with pytest.raises(SignatureError, match="future"):
        verify(SECRET, BODY, header, now=NOW)
    assert verify(SECRET, BODY, sign(SECRET, BODY, timestamp=NOW + 300), now=NOW) == NOW + 300


def test_custom_tolerance() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, BODY, header, now=NOW + 31, tolerance_s=30)


def test_retimed_signature_is_refused() -> None:
    # Moving an old signature to a fresh timestamp must not pass: the timestamp is inside the MAC.
    old = sign(SECRET, BODY, timestamp=NOW - 1000)
    forged = old.replace(f"t={NOW - 1000}", f"t={NOW}")
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(SECRET, BODY, forged, now=NOW)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing Dunning-Signature header"):
        verify(SECRET, BODY, header, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=,v1=abc",
        "t=abc,v1=abc",
        "t=-5,v1=abc",
        "v1=abc",
        f"t={NOW}",
        f"t={NOW},t={NOW},v1=abc",
        f"t={NOW},v1",
        f"t={NOW};v1=abc",
        "t=１２３,v1=abc",  # full-width digits: isdigit() alone would accept them
    ],
)
def test_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(SignatureError, match="malformed header"):
        verify(SECRET, BODY, header, now=NOW)


def test_several_v1_values_support_key_rotation() -> None:
    old = sign("old-secret", BODY, timestamp=NOW).split(",")[1]
    new = sign("new-secret", BODY, timestamp=NOW).split(",")[1]
    header = f"t={NOW},{old},{new}"
    assert verify("old-secret", BODY, header, now=NOW) == NOW
    assert verify("new-secret", BODY, header, now=NOW) == NOW
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify("third-secret", BODY, header, now=NOW)


def test_unknown_schemes_are_ignored_and_spaces_tolerated() -> None:
    header = sign(SECRET, BODY, timestamp=NOW).replace(",", ", v0=deadbeef, ")
    assert verify(SECRET, BODY, header, now=NOW) == NOW


def test_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(SECRET, BODY, f"t={NOW},v1=é", now=NOW)
