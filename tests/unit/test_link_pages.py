"""Link subjects, the confirm form's code, the link-page registry and the annual-switch price, without servers."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning.domain.policy import policy_from_dict
from dunning.engine.link_pages import LinkPage, Portal
from dunning.engine.links import (
    ACCEPT_ANNUAL_OFFER,
    MANAGE_ACCOUNT,
    PURPOSES,
    UPDATE_PAYMENT_METHOD,
    LinkError,
    LinkSigner,
    case_id_of,
    case_subject,
    subject_kind,
    subscription_id_of,
    subscription_subject,
)
from dunning.engine.registry import Workflow, check, link_page, link_purposes

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
signer = LinkSigner("link-secret", "https://pay.example.com")
HTTP = Path(__file__).resolve().parents[2] / "src" / "dunning" / "http"


@given(st.text(min_size=1, max_size=255))
def test_subscription_subject_round_trips_any_id(sub_id: str) -> None:
    subject = subscription_subject(sub_id)
    assert subject == f"sub:{sub_id}"
    assert subscription_id_of(subject) == sub_id
    assert subject_kind(subject) == "sub"
    assert case_id_of(subject) is None


def test_subscription_subject_keeps_colons_and_refuses_what_names_no_subscription() -> None:
    assert subscription_id_of(subscription_subject("org:1:sub_2")) == "org:1:sub_2"
    for subject in ["sub:", "sub", "case:5", "SUB:x", "xsub:1", "sub:" + "x" * 256, ""]:
        assert subscription_id_of(subject) is None, subject
    assert subscription_id_of("sub:" + "x" * 255) == "x" * 255


def test_subject_kind_is_what_comes_before_the_first_colon() -> None:
    assert subject_kind(case_subject(5)) == "case"
    assert subject_kind("sub:a:b") == "sub"
    assert subject_kind("no colon") == ""
    assert subject_kind(":x") == ""


def test_annual_offer_token_is_good_for_that_purpose_only() -> None:
    assert ACCEPT_ANNUAL_OFFER in PURPOSES
    token = signer.token(
        purpose=ACCEPT_ANNUAL_OFFER,
        customer="cus_1",
        subject=subscription_subject("sub_1"),
        expires_at=NOW + timedelta(days=1),
    )
    claims = signer.verify(token, purpose=(ACCEPT_ANNUAL_OFFER, MANAGE_ACCOUNT), now=NOW)
    assert (claims.purpose, claims.customer, claims.subject) == (ACCEPT_ANNUAL_OFFER, "cus_1", "sub:sub_1")
    with pytest.raises(LinkError):
        signer.verify(token, purpose=(UPDATE_PAYMENT_METHOD, MANAGE_ACCOUNT), now=NOW)
    with pytest.raises(LinkError) as expired:
        signer.verify(token, purpose=ACCEPT_ANNUAL_OFFER, now=NOW + timedelta(days=1))
    assert expired.value.expired


def test_form_code_belongs_to_one_token_and_one_secret() -> None:
    def token(customer: str) -> str:
        return signer.token(
            purpose=ACCEPT_ANNUAL_OFFER,
            customer=customer,
            subject="sub:s",
            expires_at=NOW + timedelta(days=1),
        )

    a, b = token("cus_1"), token("cus_2")
    assert signer.form_code(a) == signer.form_code(a)
    assert signer.form_code(a) != signer.form_code(b)
    assert signer.form_code(a) != LinkSigner("other-secret", "https://x").form_code(a)
    # Not the token's own signature: the URL does not give the form's code away.
    assert signer.form_code(a) not in a


def _show(rt, claims):  # type: ignore[no-untyped-def]
    return Portal()


def test_link_pages_are_found_by_purpose_and_subject_kind() -> None:
    page = link_page(UPDATE_PAYMENT_METHOD, case_subject(7))
    assert page is not None and page.act is None
    assert link_page(MANAGE_ACCOUNT, case_subject(7)) is not None
    # No workflow on this branch answers subscription links or the offer yet (the lead registers lifecycle).
    assert link_page(ACCEPT_ANNUAL_OFFER, case_subject(7)) is None
    assert link_page(UPDATE_PAYMENT_METHOD, "invoice:7") is None
    assert set(link_purposes()) <= set(PURPOSES)
    assert {UPDATE_PAYMENT_METHOD, MANAGE_ACCOUNT} <= set(link_purposes())


def test_two_workflows_claiming_one_link_page_are_refused() -> None:
    a = Workflow(name="a", links={(MANAGE_ACCOUNT, "sub"): LinkPage(show=_show)})
    b = Workflow(name="b", links={(MANAGE_ACCOUNT, "sub"): LinkPage(show=_show)})
    with pytest.raises(ValueError, match="links 'manage_account on sub' is claimed by a and b"):
        check((a, b))
    # One purpose about two kinds of subject, in two workflows, is fine.
    check((a, Workflow(name="c", links={(MANAGE_ACCOUNT, "case"): LinkPage(show=_show)})))


def test_http_names_no_workflow() -> None:
    for path in HTTP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert not any(n.startswith("dunning.workflows") for n in names), (path.name, names)


def annual_terms(amount: int, discount_percent: int | None, months_free: int | None) -> tuple[int, int]:
    """The offer's money as the accept page computes it (the policy's one formula)."""
    section: dict[str, int] = {}
    if discount_percent is not None:
        section["discount_percent"] = discount_percent
    if months_free is not None:
        section["months_free"] = months_free
    if not section:
        section["discount_percent"] = 0
    rules = policy_from_dict({"annual_offer": section}).lifecycle_for(None).annual_offer
    annual = rules.annual_price_minor(amount)
    return annual, amount * 12 - annual


def test_annual_terms_follow_the_spec() -> None:
    assert annual_terms(4900, 15, None) == (49_980, 8_820)  # 4900 * 12 * 85 // 100
    assert annual_terms(4900, None, 2) == (49_000, 9_800)
    assert annual_terms(999, 10, None) == (10_789, 1_199)  # 11,988 * 0.9 = 10,789.2, rounded down
    with pytest.raises(ValueError, match="months_free"):
        annual_terms(4900, 15, 1)


@given(
    st.integers(min_value=0, max_value=10**9),
    st.one_of(
        st.tuples(st.integers(min_value=1, max_value=50), st.none()),
        st.tuples(st.none(), st.sampled_from([1, 2])),
    ),
)
def test_annual_price_plus_saving_is_twelve_months(amount: int, terms: tuple[int | None, int | None]) -> None:
    annual, saving = annual_terms(amount, *terms)
    assert annual + saving == amount * 12
    assert 0 <= saving <= amount * 12 // 2
