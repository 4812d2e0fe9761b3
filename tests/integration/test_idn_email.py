"""Internationalized addresses, end to end through the real SMTP server (aiosmtpd).

We do not send SMTPUTF8, so an address is accepted only if it can travel in
plain ASCII: a non-ASCII domain is stored in its ASCII (punycode) form, which
every SMTP server and ``To:`` header takes; a non-ASCII local part has no
ASCII form and is refused at the door (unit tests: tests/unit/test_strict_contract.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from dunning.store.models import Customer

pytestmark = pytest.mark.integration


def test_an_idn_domain_is_stored_and_mailed_as_punycode(world: Any) -> None:
    world.customer("cus_1", email="ada@bücher.example")
    with world.rt.sessions() as s:
        stored = s.execute(select(Customer.email).where(Customer.id == "cus_1")).scalar_one()
    assert stored == "ada@xn--bcher-kva.example"
    world.fail(code="insufficient_funds")
    world.settle()
    [mail] = world.smtp.wait_for(1)
    assert mail.rcpt_tos == ("ada@xn--bcher-kva.example",)
    assert [a.addr_spec for a in mail["To"].addresses] == ["ada@xn--bcher-kva.example"]
    assert mail["To"].addresses[0].display_name == "Customer cus_1"
    assert str(mail["X-Dunning-Kind"]) == "payment_failed"
