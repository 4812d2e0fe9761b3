"""Who may read the ops page and /metrics (dunning.http.auth), and the DUNNING_OPS_TOKEN setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dunning.http.auth import Access, bearer_token, challenge, is_loopback_client, ops_access
from dunning.settings import load_settings

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "[::1]"])
def test_loopback_clients(host: str) -> None:
    assert is_loopback_client(host)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.2",  # loopback too, but nothing legitimate connects from it
        "127.1",
        "0.0.0.0",
        "::",
        "10.0.0.8",
        "172.17.0.1",  # Docker's bridge gateway: what a published port looks like from inside
        "192.0.2.2",
        "203.0.113.7",
        "::ffff:10.0.0.8",
        "fe80::1",
        "localhost",  # a name, not an address
        "testclient",
        "",
        None,
    ],
)
def test_everything_else_is_not_loopback(host: str | None) -> None:
    assert not is_loopback_client(host)


def test_bearer_token_parsing() -> None:
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"bearer   {TOKEN} ") == TOKEN
    assert bearer_token(f"Basic {TOKEN}") is None
    assert bearer_token("Bearer") is None
    assert bearer_token("Bearer   ") is None
    assert bearer_token("") is None
    assert bearer_token(None) is None


def test_without_a_token_only_loopback_clients_are_served() -> None:
    assert ops_access(token=None, client_host="127.0.0.1", authorization=None) is Access.ALLOWED
    assert ops_access(token=None, client_host="::1", authorization=None) is Access.ALLOWED
    assert ops_access(token=None, client_host="203.0.113.7", authorization=None) is Access.MISSING
    # Nothing to compare a token with: sending one does not help.
    assert (
        ops_access(token=None, client_host="203.0.113.7", authorization=f"Bearer {TOKEN}") is Access.MISSING
    )


def test_with_a_token_everyone_must_send_it() -> None:
    for host in ("127.0.0.1", "203.0.113.7", None):
        assert ops_access(token=TOKEN, client_host=host, authorization=None) is Access.MISSING
        assert ops_access(token=TOKEN, client_host=host, authorization=f"Basic {TOKEN}") is Access.MISSING
        assert ops_access(token=TOKEN, client_host=host, authorization="Bearer wrong") is Access.INVALID
        assert (
            ops_access(token=TOKEN, client_host=host, authorization=f"Bearer {TOKEN[:-1]}") is Access.INVALID
        )
        assert ops_access(token=TOKEN, client_host=host, authorization=f"Bearer {TOKEN}x") is Access.INVALID
        assert ops_access(token=TOKEN, client_host=host, authorization=f"Bearer {TOKEN}") is Access.ALLOWED
    assert ops_access(token=TOKEN, client_host=None, authorization="Bearer ünïcode") is Access.INVALID


def test_challenges() -> None:
    assert challenge(Access.MISSING) == 'Bearer realm="dunning-ops"'
    assert challenge(Access.INVALID) == 'Bearer realm="dunning-ops", error="invalid_token"'


def test_ops_token_setting(tmp_path: Path) -> None:
    base = {"DUNNING_HOME": str(tmp_path)}
    assert load_settings(base).ops_token is None
    assert load_settings({**base, "DUNNING_OPS_TOKEN": ""}).ops_token is None
    assert load_settings({**base, "DUNNING_OPS_TOKEN": TOKEN}).ops_token == TOKEN
    with pytest.raises(ValueError, match=r"DUNNING_OPS_TOKEN: 6 characters is too short; use at least 16"):
        load_settings({**base, "DUNNING_OPS_TOKEN": "secret"})
    with pytest.raises(ValueError, match=r"DUNNING_OPS_TOKEN: use printable ASCII without spaces"):
        load_settings({**base, "DUNNING_OPS_TOKEN": "a token with spaces in it"})
