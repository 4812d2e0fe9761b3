"""Link tokens, the portal token and the redirect URL, without any server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.engine.links import (
    MANAGE_ACCOUNT,
    PURPOSES,
    UPDATE_PAYMENT_METHOD,
    LinkClaims,
    LinkError,
    LinkSigner,
    PortalTokenError,
    case_id_of,
    case_subject,
    derive_portal_secret,
    portal_redirect_url,
    portal_token,
    verify_portal_token,
)
from dunning.settings import load_settings
from dunning.workflows.failed_payments.notices import ACTION_PURPOSES, KINDS

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SECRET = "link-secret"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

signer = LinkSigner(SECRET, "https://pay.example.com/")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _legacy_token(subject: str, expires_at: datetime, purpose: str = UPDATE_PAYMENT_METHOD) -> str:
    """A token exactly as versions before 2026-12 wrote them into emails."""
    key = hashlib.sha256(("dunning-links:" + SECRET).encode()).digest()
    body = _b64(
        json.dumps(
            {"p": purpose, "s": subject, "e": int(expires_at.timestamp())}, separators=(",", ":")
        ).encode()
    )
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18])}"


def _signed(body: bytes) -> str:
    encoded = _b64(body)
    return f"{encoded}.{signer._sign(encoded)}"


# -- link tokens -------------------------------------------------------------


@given(customer=st.text(min_size=1, max_size=255), case_id=st.integers(1, 2**31 - 1))
def test_claims_round_trip_whatever_the_customer_id(customer: str, case_id: int) -> None:
    url = signer.url(
        purpose=UPDATE_PAYMENT_METHOD,
        customer=customer,
        subject=case_subject(case_id),
        now=NOW,
        ttl=timedelta(days=21),
    )
    assert url.startswith("https://pay.example.com/l/")
    token = url.rsplit("/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_\-.]+", token)  # safe in a URL path as it is
    claims = signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW)
    assert claims == LinkClaims(UPDATE_PAYMENT_METHOD, customer, f"case:{case_id}", NOW + timedelta(days=21))
    assert case_id_of(claims.subject) == case_id


def test_worst_case_token_fits_the_limit() -> None:
    token = signer.token(
        purpose=UPDATE_PAYMENT_METHOD, customer="😀" * 255, subject=case_subject(2**31 - 1), expires_at=NOW
    )
    assert len(token) < 5000
    assert (
        signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW - timedelta(seconds=1)).customer
        == "😀" * 255
    )


def test_purpose_is_checked() -> None:
    token = signer.token(
        purpose="pick_option", customer="cus_1", subject="case:1", expires_at=NOW + timedelta(days=1)
    )
    with pytest.raises(LinkError) as refused:
        signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW)
    assert not refused.value.expired
    assert signer.verify(token, purpose=("pick_option", MANAGE_ACCOUNT), now=NOW).purpose == "pick_option"


def test_expiry_is_checked() -> None:
    token = signer.token(purpose=UPDATE_PAYMENT_METHOD, customer="c", subject="case:1", expires_at=NOW)
    assert signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW - timedelta(seconds=1))
    with pytest.raises(LinkError) as refused:
        signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW)
    assert refused.value.expired


def test_another_secret_refuses() -> None:
    token = signer.token(
        purpose=UPDATE_PAYMENT_METHOD, customer="c", subject="case:1", expires_at=NOW + timedelta(1)
    )
    with pytest.raises(LinkError):
        LinkSigner("other", "https://x").verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW)


@pytest.mark.parametrize(
    ("subject", "customer", "case"),
    [("org:123:5", "org:123", "case:5"), ("cus_1:42", "cus_1", "case:42"), ("a::b:7", "a::b", "case:7")],
)
def test_legacy_tokens_keep_their_whole_customer(subject: str, customer: str, case: str) -> None:
    claims = signer.verify(
        _legacy_token(subject, NOW + timedelta(days=3)), purpose=UPDATE_PAYMENT_METHOD, now=NOW
    )
    assert (claims.customer, claims.subject, claims.legacy) == (customer, case, True)


@pytest.mark.parametrize(
    "subject", ["cus_1", ":5", "cus_1:", "cus_1:x", "cus_1:05", "cus_1:-5", "c:99999999999"]
)
def test_legacy_tokens_that_name_no_case_are_refused(subject: str) -> None:
    with pytest.raises(LinkError):
        signer.verify(_legacy_token(subject, NOW + timedelta(days=3)), purpose=UPDATE_PAYMENT_METHOD, now=NOW)


def test_legacy_tokens_expire_and_keep_their_purpose() -> None:
    with pytest.raises(LinkError) as refused:
        signer.verify(_legacy_token("cus_1:1", NOW), purpose=UPDATE_PAYMENT_METHOD, now=NOW)
    assert refused.value.expired
    with pytest.raises(LinkError):
        signer.verify(
            _legacy_token("cus_1:1", NOW + timedelta(1), "other"), purpose=UPDATE_PAYMENT_METHOD, now=NOW
        )


@settings(max_examples=300)
@given(st.text(max_size=400) | st.binary(max_size=300).map(lambda b: _b64(b) + "." + _b64(b[:18])))
def test_any_string_is_a_link_error_never_a_crash(token: str) -> None:
    with pytest.raises(LinkError):
        signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["p", "c", "s", "e", "v"]), inner)
    ),
    max_leaves=15,
)


@settings(max_examples=300)
@given(_json)
def test_signed_garbage_claims_are_a_link_error_never_a_crash(value: Any) -> None:
    try:
        claims = signer.verify(_signed(json.dumps(value).encode()), purpose=UPDATE_PAYMENT_METHOD, now=NOW)
    except LinkError:
        return
    assert isinstance(claims.customer, str) and claims.purpose == UPDATE_PAYMENT_METHOD  # a well-formed token


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[" * 5000,
        b'{"v":2,"p":"update_payment_method","c":"c","s":"case:1","e":1e999}',
        b'{"v":2,"p":"update_payment_method","c":"c","s":"case:1","e":100000000000000000000}',
        b'{"v":2,"p":"update_payment_method","c":"c","s":"case:1","e":true}',
        b'{"v":2,"p":"update_payment_method","c":"","s":"case:1","e":2000000000}',
        b'{"v":3,"p":"update_payment_method","c":"c","s":"case:1","e":2000000000}',
    ],
)
def test_signed_bodies_that_are_not_claims(body: bytes) -> None:
    with pytest.raises(LinkError):
        signer.verify(_signed(body), purpose=UPDATE_PAYMENT_METHOD, now=NOW)


@pytest.mark.parametrize(
    "subject", ["case:0", "case:01", "case:2147483648", "case:1 ", "case:١", "org:1", "case:"]
)
def test_subjects_that_name_no_case(subject: str) -> None:
    assert case_id_of(subject) is None


def test_every_email_kind_has_a_link_purpose() -> None:
    assert set(ACTION_PURPOSES) == set(KINDS)
    assert set(ACTION_PURPOSES.values()) <= set(PURPOSES)
    assert ACTION_PURPOSES["payment_failed"] == UPDATE_PAYMENT_METHOD
    assert ACTION_PURPOSES["payment_recovered"] == MANAGE_ACCOUNT


# -- the portal token --------------------------------------------------------

T = 1_800_000_000.0


def _portal(customer: str = "org:123", purpose: str = UPDATE_PAYMENT_METHOD) -> str:
    return portal_token("portal-secret", customer=customer, purpose=purpose, subject="case:5", now=T)


def test_portal_token_verifies_for_ten_minutes() -> None:
    token = _portal()
    claims = verify_portal_token(token, "portal-secret", customer="org:123", now=T)
    assert (claims.customer, claims.purpose, claims.subject, claims.expires_at) == (
        "org:123",
        UPDATE_PAYMENT_METHOD,
        "case:5",
        int(T) + 600,
    )
    assert verify_portal_token(token, "portal-secret", now=T + 599).customer == "org:123"
    with pytest.raises(PortalTokenError, match="expired"):
        verify_portal_token(token, "portal-secret", now=T + 600)


def test_portal_tokens_differ_per_redirect() -> None:
    assert _portal() != _portal()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"customer": "org"}, "another customer"),
        ({"purpose": MANAGE_ACCOUNT}, "another purpose"),
    ],
)
def test_portal_token_is_bound_to_customer_and_purpose(kwargs: dict[str, str], reason: str) -> None:
    with pytest.raises(PortalTokenError, match=reason):
        verify_portal_token(_portal(), "portal-secret", now=T, **kwargs)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_any_string_is_a_portal_token_error(token: str) -> None:
    with pytest.raises(PortalTokenError):
        verify_portal_token(token, "portal-secret", now=T)


def test_derived_portal_secret_is_one_way_and_stable() -> None:
    derived = derive_portal_secret(SECRET)
    assert derived == derive_portal_secret(SECRET) != derive_portal_secret("other")
    assert SECRET not in derived and re.fullmatch(r"[0-9a-f]{64}", derived)


def _docs_snippet(heading: str) -> str:
    text = DOCS.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_documented_portal_recipe_verifies_our_tokens() -> None:
    """The Python in docs/configuration.md, run as a portal would run it."""
    namespace: dict[str, Any] = {}
    exec(_docs_snippet("### Verifying dunning_token in the portal"), namespace)
    verify = namespace["verify_dunning_token"]
    import time

    token = portal_token(
        "s3", customer="cus_😀&x=1", purpose=UPDATE_PAYMENT_METHOD, subject="case:9", now=time.time()
    )
    assert verify(token, "s3", "cus_😀&x=1")["s"] == "case:9"
    for args in [("s4", "cus_😀&x=1"), ("s3", "cus_😀")]:
        with pytest.raises(ValueError):
            verify(token, *args)
    with pytest.raises(ValueError, match="another page"):
        verify(token, "s3", "cus_😀&x=1", MANAGE_ACCOUNT)
    old = portal_token(
        "s3", customer="c", purpose=UPDATE_PAYMENT_METHOD, subject="case:9", now=time.time() - 601
    )
    with pytest.raises(ValueError, match="expired"):
        verify(old, "s3", "c")


def test_the_documented_secret_derivation_is_the_one_used() -> None:
    import hashlib as _hashlib
    import hmac as _hmac

    expression = _docs_snippet("### The portal secret").strip()
    assert eval(
        expression, {"hmac": _hmac, "hashlib": _hashlib, "link_secret": SECRET}
    ) == derive_portal_secret(SECRET)


# -- the redirect URL --------------------------------------------------------


@settings(max_examples=300)
@given(customer=st.text(min_size=1, max_size=80))
@pytest.mark.parametrize(
    "template",
    [
        "https://billing.example.com/portal?customer={customer_id}",
        "https://billing.example.com/portal?a=1&customer={customer_id}&b=%7B2%7D#card",
        "https://billing.example.com/portal",
        "https://billing.example.com/portal?lang=en",
    ],
)
def test_redirect_has_exactly_one_whole_customer(template: str, customer: str) -> None:
    url = portal_redirect_url(template, customer=customer, token="tok.abc")
    assert url.isascii() and not any(c in url for c in " \r\n\t")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "billing.example.com", "/portal")
    params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert params["customer"] == [customer]
    assert params["dunning_token"] == ["tok.abc"]
    if "#card" in template:
        assert (params["a"], params["b"], parts.fragment) == (["1"], ["{2}"], "card")


@given(customer=st.text(min_size=1, max_size=80))
def test_placeholder_in_the_path_is_one_segment(customer: str) -> None:
    url = portal_redirect_url(
        "https://b.example.com/customers/{customer_id}/card", customer=customer, token="t"
    )
    parts = urlsplit(url)
    segments = parts.path.split("/")
    assert len(segments) == 4 and unquote(segments[2], errors="strict") == customer
    assert parse_qs(parts.query) == {"dunning_token": ["t"]}


def test_other_braces_are_left_alone() -> None:
    url = portal_redirect_url("https://b.example.com/{tenant}?id={customer_id}", customer="x", token="t")
    assert url == "https://b.example.com/{tenant}?id=x&dunning_token=t"


# -- settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["billing.example.com/portal", "ftp://b.example.com/", "https://", "/portal"]
)
def test_a_portal_url_customers_cannot_follow_is_refused_at_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="DUNNING_PAYMENT_UPDATE_URL: expected an absolute http"):
        load_settings({"DUNNING_HOME": str(tmp_path), "DUNNING_PAYMENT_UPDATE_URL": value})


def test_portal_secret_setting(tmp_path: Path) -> None:
    base = {"DUNNING_HOME": str(tmp_path), "DUNNING_LINK_SECRET": "l"}
    assert load_settings(base).portal_secret is None
    assert load_settings({**base, "DUNNING_PORTAL_SECRET": "p"}).portal_secret == "p"


def test_a_lone_surrogate_in_an_id_neither_crashes_the_token_nor_the_redirect() -> None:
    customer = "cus_\ud800x"  # JSON can carry one ("\ud800"), UTF-8 cannot
    token = signer.token(purpose=UPDATE_PAYMENT_METHOD, customer=customer, subject="case:1", expires_at=NOW)
    assert signer.verify(token, purpose=UPDATE_PAYMENT_METHOD, now=NOW - timedelta(1)).customer == customer
    for template in ("https://b.example.com/p?c={customer_id}", "https://b.example.com/p"):
        url = portal_redirect_url(template, customer=customer, token="t")
        assert url.isascii() and "dunning_token=t" in url
