"""The locale fallback counter on /metrics: emails sent in English to customers who asked for another language."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from dunning.http.app import create_app

pytestmark = pytest.mark.integration


def test_emails_that_fell_back_to_english_are_counted_by_requested_language(world: Any) -> None:
    h = world
    # ja-JP and ja: one language label; "zz" is no language; pt-BR is a region of a shipped language.
    for n, locale in enumerate(["ja-JP", "ja", "zz_ZZ", "pt-BR", "fi"], start=1):
        h.customer(f"cus_{n}", locale=locale, sub=f"sub_{n}")
        h.fail(f"in_{n}", sub=f"sub_{n}", cid=f"cus_{n}", code="insufficient_funds")
    h.settle()
    sent = {row.locale: row for row in h.outbox() if row.status == "sent"}
    assert set(sent) == {"ja-JP", "ja", "zz_ZZ", "pt-BR", "fi"}
    assert sent["ja-JP"].subject == "Your payment of €49.00 for Acme didn't go through"  # English
    client = TestClient(create_app(h.rt, broker=h.broker), client=("127.0.0.1", 50000))
    body = client.get("/metrics").text
    lines = sorted(
        line for line in body.splitlines() if line.startswith("dunning_email_locale_fallback_total")
    )
    assert lines == [
        'dunning_email_locale_fallback_total{requested="invalid"} 1.0',
        'dunning_email_locale_fallback_total{requested="ja"} 2.0',
    ]
