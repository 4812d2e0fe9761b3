"""The price-choice link subject (``price:MIG:SUB:OFFER``) and its registration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dunning.engine import registry
from dunning.engine.links import (
    PRICE_CHOICE,
    PURPOSES,
    LinkSigner,
    price_parts_of,
    price_subject,
    subject_kind,
    subscription_id_of,
)
from dunning.workflows.price_migrations.choices import record_choice, show_choice


@pytest.mark.parametrize("sub", ["sub_1", "org:42", "a:b:c", "x" * 255])
@pytest.mark.parametrize("offer", ["step_up", "annual_lock", "downgrade", "none"])
def test_a_price_subject_round_trips_whatever_the_subscription_id(sub: str, offer: str) -> None:
    subject = price_subject("pm_1", sub, offer)
    assert subject_kind(subject) == "price"
    assert price_parts_of(subject) == ("pm_1", sub, offer)
    assert subscription_id_of(subject) is None  # not a subscription link


@pytest.mark.parametrize(
    "subject",
    [
        "sub:sub_1",
        "price:",
        "price:pm_1",
        "price:pm_1:step_up",
        "price::sub_1:none",
        "price:pm_1:sub_1:",
        "price:pm_1:" + "x" * 256 + ":none",
    ],
)
def test_malformed_price_subjects_name_nothing(subject: str) -> None:
    assert price_parts_of(subject) is None


def test_price_choice_links_are_answered_by_the_price_workflow_and_signed_for_one_purpose() -> None:
    assert PRICE_CHOICE in PURPOSES and PRICE_CHOICE in registry.link_purposes()
    page = registry.link_page(PRICE_CHOICE, price_subject("pm_1", "sub_1", "none"))
    assert page is not None and page.show is show_choice and page.act is record_choice
    assert registry.link_page(PRICE_CHOICE, "sub:sub_1") is None
    signer = LinkSigner("secret", "https://pay.example")
    now = datetime(2026, 11, 2, tzinfo=UTC)
    token = signer.token(
        purpose=PRICE_CHOICE,
        customer="cus_1",
        subject=price_subject("pm_1", "sub_1", "none"),
        expires_at=now + timedelta(days=1),
    )
    claims = signer.verify(token, purpose=registry.link_purposes(), now=now)
    assert (claims.purpose, claims.customer, claims.subject) == (
        PRICE_CHOICE,
        "cus_1",
        "price:pm_1:sub_1:none",
    )
