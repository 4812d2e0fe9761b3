"""The dashboard's session cookie and CSRF tokens (dunning.http.ops_session): pure functions, fixed times."""

from __future__ import annotations

from dunning.http import ops_session as o

TOKEN = "ops-token-0123456789abcdef"
T0 = 1_800_000_000.0


def test_a_session_is_valid_for_its_token_until_it_expires() -> None:
    cookie = o.issue(TOKEN, T0, nonce="abc123")
    assert TOKEN not in cookie
    assert o.session_nonce(TOKEN, cookie, T0) == "abc123"
    assert o.session_nonce(TOKEN, cookie, T0 + o.SESSION_TTL_S - 1) == "abc123"
    assert o.session_nonce(TOKEN, cookie, T0 + o.SESSION_TTL_S) is None
    assert o.session_nonce(TOKEN, cookie, T0 - 10) is None  # issued in the future: forged or a bad clock


def test_a_new_token_ends_every_session_and_no_token_means_no_session() -> None:
    cookie = o.issue(TOKEN, T0)
    assert o.session_nonce(TOKEN + "x", cookie, T0) is None
    assert o.session_nonce(None, cookie, T0) is None


def test_tampered_or_malformed_cookies_are_refused() -> None:
    issued, nonce, mac = o.issue(TOKEN, T0, nonce="abc123").split(".")
    for bad in (
        f"{issued}.abc124.{mac}",
        f"{int(issued) + 1}.{nonce}.{mac}",
        f"{issued}.{nonce}.{mac[:-1]}0" if mac[-1] != "0" else f"{issued}.{nonce}.{mac[:-1]}1",
        f"{issued}.{nonce}",
        "",
        "x" * 500,
        f"{issued}.{nonce}.{mac}.extra",
        f"{issued}.é.{mac}",
    ):
        assert o.session_nonce(TOKEN, bad, T0) is None, bad


def test_csrf_tokens_belong_to_one_session_and_compare_strictly() -> None:
    a, b = o.csrf_for(TOKEN, "nonce1"), o.csrf_for(TOKEN, "nonce2")
    assert a != b and a == o.csrf_for(TOKEN, "nonce1")
    assert o.csrf_for(TOKEN + "x", "nonce1") != a
    assert o.same(a, a)
    assert not o.same(a, b)
    assert not o.same(a, "")
    assert not o.same(None, None)
    assert not o.same("", "")
