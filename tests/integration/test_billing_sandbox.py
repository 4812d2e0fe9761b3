"""HttpBillingClient against the real sandbox billing server over HTTP on 127.0.0.1 (contract §2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from dunning.billing.http_client import HttpBillingClient
from dunning.billing.port import BillingRejected, BillingUnavailable, InvoiceState, PayOutcome, PayResult
from dunning.devtools.sandbox import SandboxServer
from dunning.signing import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.integration

SECRET = "billing-test-secret"
FAST = {"backoff_initial_s": 0.001, "backoff_max_s": 0.01, "backoff_jitter_s": 0.001}


def make_client(url: str, secret: str = SECRET, *, timeout_s: float = 2.0) -> HttpBillingClient:
    """A client with millisecond backoff so retry tests stay fast."""
    return HttpBillingClient(url, secret, timeout_s=timeout_s, attempts=4, **FAST)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(secret=SECRET, seed=7) as server:  # port 0: a free port per test
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[HttpBillingClient]:
    with make_client(sandbox.url) as billing:
        yield billing


def add_invoice(
    server: SandboxServer, invoice_id: str, decline_code: str | None, customer: str = "cus_1"
) -> None:
    """Register an open invoice whose card declines with ``decline_code`` (None: the card works)."""
    server.state.add_invoice(
        invoice_id,
        subscription_id=f"sub_{invoice_id}",
        customer_id=customer,
        amount_minor=2_500,
        currency="EUR",
        decline_code=decline_code,
    )


def pay_until_success(client: HttpBillingClient, invoice_id: str, limit: int = 40) -> list[PayResult]:
    """Retry like a dunning schedule would: one new key per attempt, stop at the first success."""
    results: list[PayResult] = []
    for n in range(limit):
        results.append(client.pay_invoice(invoice_id, f"{invoice_id}:attempt:{n}"))
        if results[-1].outcome is PayOutcome.SUCCEEDED:
            break
    return results


def test_soft_decline_recovers_and_the_sequence_is_seeded() -> None:
    invoices = ["in_soft_1", "in_soft_2", "in_soft_3", "in_soft_4"]
    runs: dict[int, list[list[PayResult]]] = {}
    for seed in (7, 7, 8):
        with SandboxServer(secret=SECRET, seed=seed) as server, make_client(server.url) as billing:
            for invoice_id in invoices:
                add_invoice(server, invoice_id, "insufficient_funds")
            sequences = [pay_until_success(billing, invoice_id) for invoice_id in invoices]
            assert server.state.stats()["charges"] == dict.fromkeys(invoices, 1)
        if seed in runs:
            assert sequences == runs[seed], "same seed, same invoices: same outcomes"
        runs[seed] = sequences
    first = runs[7][0]
    assert [r.outcome for r in first] == [PayOutcome.FAILED, PayOutcome.FAILED, PayOutcome.SUCCEEDED]
    assert {r.decline_code for r in first[:-1]} == {"insufficient_funds"}
    assert runs[8] != runs[7], "another seed gives other outcomes"


def test_hard_decline_never_succeeds_until_the_card_is_updated(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_hard", "stolen_card", customer="cus_hard")
    before = [client.pay_invoice("in_hard", f"hard:{n}") for n in range(15)]
    assert {(r.outcome, r.decline_code) for r in before} == {(PayOutcome.FAILED, "stolen_card")}
    assert client.invoice_state("in_hard") is InvoiceState.OPEN

    # Through the admin HTTP endpoint, as a producer outside Python would.
    answer = httpx.post(f"{sandbox.url}/_sandbox/customers/cus_hard/payment_method", json={"present": True})
    assert answer.status_code == 200
    after = pay_until_success(client, "in_hard", limit=10)
    assert after[-1].outcome is PayOutcome.SUCCEEDED
    assert all(r.decline_code == "generic_decline" for r in after[:-1])
    assert client.invoice_state("in_hard") is InvoiceState.PAID
    assert sandbox.state.stats()["charges"]["in_hard"] == 1


def test_same_key_replays_the_first_answer_and_never_charges_twice(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_ok", None)
    add_invoice(sandbox, "in_declined", "do_not_try_again")
    assert client.pay_invoice("in_ok", "key-ok") == PayResult(PayOutcome.SUCCEEDED)
    assert client.pay_invoice("in_ok", "key-ok") == PayResult(PayOutcome.SUCCEEDED)
    failed = client.pay_invoice("in_declined", "key-declined")
    assert failed == PayResult(PayOutcome.FAILED, decline_code="do_not_try_again")
    assert client.pay_invoice("in_declined", "key-declined") == failed

    stats = sandbox.state.stats()
    assert stats["charges"] == {"in_ok": 1, "in_declined": 0}
    assert stats["replays"] == 2
    assert stats["double_charges"] == 0
    assert sandbox.state.invoice("in_declined").attempts == 1, "a replay is not a new attempt"
    assert [c.replay for c in sandbox.state.calls()] == [False, True, False, True]

    # One key, one intent: reusing it for another invoice is refused, not silently replayed.
    with pytest.raises(BillingRejected, match="422 idempotency_key_reused"):
        client.pay_invoice("in_declined", "key-ok")


def test_paying_an_invoice_paid_out_of_band_is_refused_and_reported(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_oob", "insufficient_funds")
    sandbox.state.mark_paid("in_oob")
    assert client.pay_invoice("in_oob", "late-key") == PayResult(PayOutcome.SUCCEEDED, detail="already paid")
    stats = sandbox.state.stats()
    assert (stats["paid_elsewhere_requests"], stats["double_charges"]) == (1, 0)
    assert stats["charges"]["in_oob"] == 0


def test_paying_again_after_our_own_charge_succeeded_is_a_double_charge(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_twice", None)  # the card works
    assert client.pay_invoice("in_twice", "key-1").outcome is PayOutcome.SUCCEEDED
    assert client.pay_invoice("in_twice", "key-2") == PayResult(PayOutcome.SUCCEEDED, detail="already paid")
    stats = sandbox.state.stats()
    assert (stats["double_charges"], stats["paid_elsewhere_requests"]) == (1, 0)
    assert stats["charges"]["in_twice"] == 1


def test_5xx_is_retried_under_the_same_key_then_succeeds(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_5xx", None)
    sandbox.state.queue_faults("error", "error")
    assert client.pay_invoice("in_5xx", "key-5xx").outcome is PayOutcome.SUCCEEDED

    calls = sandbox.state.calls()
    assert [c.status for c in calls] == [503, 503, 200]
    assert {c.idempotency_key for c in calls} == {"key-5xx"}
    assert sandbox.state.stats()["charges"]["in_5xx"] == 1


def test_every_attempt_failing_gives_unknown_then_unavailable(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    add_invoice(sandbox, "in_down", None)
    sandbox.state.set_faults(error_rate=1.0)
    result = client.pay_invoice("in_down", "key-down")
    assert result.outcome is PayOutcome.UNKNOWN
    assert result.detail is not None and "HTTP 503" in result.detail
    with pytest.raises(BillingUnavailable, match="503"):
        client.invoice_state("in_down")
    assert len(sandbox.state.calls()) == 8, "4 attempts per call"
    assert sandbox.state.invoice("in_down").attempts == 0


def test_lost_answer_is_unknown_then_reconciled_without_a_second_charge(sandbox: SandboxServer) -> None:
    add_invoice(sandbox, "in_lost", None)
    # The charge is applied but the answer hangs past the client's timeout: a real ReadTimeout.
    sandbox.state.set_faults(lost_answer_rate=1.0, hang_s=0.6)
    with make_client(sandbox.url, timeout_s=0.2) as billing:
        result = billing.pay_invoice("in_lost", "key-lost")
        assert result.outcome is PayOutcome.UNKNOWN
        assert result.detail is not None and "ReadTimeout" in result.detail

        sandbox.state.set_faults(lost_answer_rate=0.0)
        assert billing.invoice_state("in_lost") is InvoiceState.PAID
        assert billing.pay_invoice("in_lost", "key-lost") == PayResult(PayOutcome.SUCCEEDED)

    stats = sandbox.state.stats()
    assert stats["charges"]["in_lost"] == 1
    assert stats["double_charges"] == 0
    assert stats["replays"] == 4, "three lost retries and the final pay were replays"
    pays = [c for c in sandbox.state.calls() if c.method == "POST"]
    assert [c.fault for c in pays] == ["lost_answer"] * 4 + [None]
    assert {c.idempotency_key for c in pays} == {"key-lost"}
    assert pays[0].outcome == "succeeded" and not pays[0].replay


def test_dropped_connection_is_retried(sandbox: SandboxServer, client: HttpBillingClient) -> None:
    sandbox.state.add_subscription("sub_drop", plan="pro")
    sandbox.state.queue_faults("timeout", "lost_answer")
    client.suspend("sub_drop", "key-drop")
    assert sandbox.state.subscription("sub_drop").access == "suspended"
    assert [(c.fault, c.replay) for c in sandbox.state.calls()] == [
        ("timeout", False),
        ("lost_answer", False),
        (None, True),
    ]


def test_bad_signature_is_rejected(sandbox: SandboxServer) -> None:
    add_invoice(sandbox, "in_sig", None)
    with make_client(sandbox.url, secret="wrong-secret") as billing:
        with pytest.raises(BillingRejected, match="401 invalid_signature"):
            billing.pay_invoice("in_sig", "key-sig")
        with pytest.raises(BillingRejected, match="401"):
            billing.invoice_state("in_sig")
    assert sandbox.state.invoice("in_sig").attempts == 0
    assert [c.status for c in sandbox.state.calls()] == [401, 401], "4xx are not retried"


def test_stale_unsigned_and_keyless_requests_are_refused(sandbox: SandboxServer) -> None:
    add_invoice(sandbox, "in_raw", None)
    url = f"{sandbox.url}/invoices/in_raw/pay"
    stale = sign(SECRET, b"", timestamp=1_000_000_000)
    answers = [
        httpx.post(url, headers={"Idempotency-Key": "k1"}),
        httpx.post(url, headers={"Idempotency-Key": "k2", SIGNATURE_HEADER: stale}),
        httpx.post(url, headers={SIGNATURE_HEADER: sign(SECRET, b"")}),
    ]
    assert [(a.status_code, a.json().get("reason", a.json()["error"])) for a in answers] == [
        (401, "missing Dunning-Signature header"),
        (401, "timestamp too old"),
        (400, "idempotency_key_required"),
    ]
    assert sandbox.state.invoice("in_raw").status == "open"


def test_unknown_invoice_is_rejected_and_its_key_stays_usable(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    with pytest.raises(BillingRejected, match="404"):
        client.pay_invoice("in_late", "key-late")
    with pytest.raises(BillingRejected, match="404"):
        client.invoice_state("in_late")
    # Nothing ran, so nothing was remembered under the key: once the invoice exists the same intent goes through.
    add_invoice(sandbox, "in_late", None)
    assert client.pay_invoice("in_late", "key-late") == PayResult(PayOutcome.SUCCEEDED)
    assert sandbox.state.stats()["replays"] == 0


def test_subscription_calls_change_sandbox_state(sandbox: SandboxServer, client: HttpBillingClient) -> None:
    sandbox.state.add_subscription(
        "sub_1", customer_id="cus_1", plan="pro", amount_minor=4_900, currency="EUR"
    )

    client.suspend("sub_1", "sub_1:suspend")
    assert sandbox.state.subscription("sub_1").access == "suspended"
    client.reinstate("sub_1", "sub_1:reinstate")
    assert sandbox.state.subscription("sub_1").access == "active"

    client.change_plan(
        "sub_1",
        "sub_1:downgrade",
        plan="basic",
        amount_minor=1_900,
        currency="EUR",
        effective_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    sub = sandbox.state.subscription("sub_1")
    assert (sub.plan, sub.amount_minor, sub.currency) == ("basic", 1_900, "EUR")
    assert sub.plan_effective_at == "2026-12-01T00:00:00Z"
    with pytest.raises(BillingRejected, match="422 invalid_field"):
        client.change_plan(
            "sub_1", "sub_1:bad", plan="x", amount_minor=1, currency="eur", effective_at=datetime.now(UTC)
        )
    assert sandbox.state.subscription("sub_1").plan == "basic"

    client.cancel("sub_1", "sub_1:cancel", reason="payment_failed")
    sub = sandbox.state.subscription("sub_1")
    assert sub.canceled and sub.cancel_reason == "payment_failed"

    with pytest.raises(BillingRejected, match="409 subscription_canceled"):
        client.suspend("sub_1", "sub_1:suspend-again")
    with pytest.raises(BillingRejected, match="404"):
        client.suspend("sub_unknown", "sub_unknown:suspend")


def test_change_plan_sends_the_billing_interval_only_when_given(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    sandbox.state.add_subscription(
        "sub_1", customer_id="cus_1", plan="pro", amount_minor=4_900, currency="EUR"
    )
    at = datetime(2026, 12, 1, tzinfo=UTC)
    # A contract v1 body, byte for byte. The client, given no interval, sends exactly this body:
    # under the same key the sandbox replays it (a different body would be 422 idempotency_key_reused).
    v1 = b'{"plan":"basic","amount_minor":1900,"currency":"EUR","effective_at":"2026-12-01T00:00:00Z"}'
    raw = httpx.post(
        f"{sandbox.url}/subscriptions/sub_1/change_plan",
        content=v1,
        headers={
            SIGNATURE_HEADER: sign(SECRET, v1),
            "Idempotency-Key": "k-v1",
            "Content-Type": "application/json",
        },
    )
    assert raw.status_code == 200, raw.text
    client.change_plan("sub_1", "k-v1", plan="basic", amount_minor=1_900, currency="EUR", effective_at=at)
    assert sandbox.state.stats()["replays"] == 1
    assert sandbox.state.subscription("sub_1").interval is None

    client.change_plan(
        "sub_1",
        "k-year",
        plan="pro",
        amount_minor=49_980,
        currency="EUR",
        effective_at=at,
        interval="year",
        interval_count=1,
    )
    sub = sandbox.state.subscription("sub_1")
    assert (sub.plan, sub.amount_minor, sub.interval, sub.interval_count) == ("pro", 49_980, "year", 1)
    for bad in ({"interval": "fortnight"}, {"interval": "year", "interval_count": 0}):
        with pytest.raises(BillingRejected, match="422 invalid_field"):
            client.change_plan(
                "sub_1", f"k-bad-{len(bad)}", plan="x", amount_minor=1, currency="EUR", effective_at=at, **bad
            )
    assert sandbox.state.subscription("sub_1").plan == "pro"


def test_mutation_that_never_gets_through_is_unavailable(
    sandbox: SandboxServer, client: HttpBillingClient
) -> None:
    sandbox.state.add_subscription("sub_down")
    sandbox.state.set_faults(timeout_rate=1.0)
    with pytest.raises(BillingUnavailable, match="RemoteProtocolError"):
        client.cancel("sub_down", "sub_down:cancel")
    assert not sandbox.state.subscription("sub_down").canceled


def test_admin_endpoints_over_http(sandbox: SandboxServer, client: HttpBillingClient) -> None:
    admin = httpx.Client(base_url=f"{sandbox.url}/_sandbox")
    with admin:
        created = admin.post(
            "/invoices",
            json={
                "id": "in_admin",
                "subscription_id": "sub_admin",
                "customer_id": "cus_admin",
                "amount_minor": 990,
                "currency": "USD",
                "decline_code": "expired_card",
            },
        )
        assert created.status_code == 201 and created.json()["status"] == "open"
        assert admin.post("/faults", json={"error_rate": 0.5, "next": ["error"]}).json()["error_rate"] == 0.5
        assert admin.post("/faults", json={"error_rate": 0.0}).status_code == 200
        assert client.pay_invoice("in_admin", "key-admin").decline_code == "expired_card"
        assert admin.post("/invoices/in_admin/mark_paid").json()["status"] == "paid"
        assert admin.get("/stats").json() == {
            "charges": {"in_admin": 0},
            "double_charges": 0,
            "paid_elsewhere_requests": 0,
            "replays": 0,
            "calls": 2,
        }
        calls = admin.get("/calls").json()["calls"]
        assert [(c["status"], c["fault"]) for c in calls] == [(503, "error"), (200, None)]
        assert admin.get("/subscriptions/sub_admin").json()["access"] == "active"
        assert admin.get("/invoices/in_nope").status_code == 404
        assert admin.post("/reset").status_code == 200
        assert admin.get("/stats").json()["calls"] == 0
