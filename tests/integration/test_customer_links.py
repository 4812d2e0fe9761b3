"""Customer links, from the outside: links read from the emails the real SMTP server
received, followed on a real ``dunning serve`` process (issue 8, defect 4).

The portal token in the redirect is checked with the helper docs/configuration.md
tells the billing portal to use.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from tests.support.servers import free_port

from dunning.engine.links import (
    MANAGE_ACCOUNT,
    UPDATE_PAYMENT_METHOD,
    LinkSigner,
    PortalTokenError,
    case_subject,
    verify_portal_token,
)
from dunning.store.models import Case, ChargeAttempt, Job, Outbox, TimelineEntry

pytestmark = pytest.mark.integration

LINK_SECRET = "test-link-secret"  # what the harness's workers sign links with
PORTAL_SECRET = "portal-shared-secret"
PORTAL = "https://billing.example.com/portal?customer={customer_id}"

HOSTILE_IDS = ["org:123", "cus_1&customer=cus_2", "cus_😀_ünï"]


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: Message  # case-insensitive
    text: str


class Serve:
    """``dunning serve`` as a child process on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("DUNNING_")}
        handle = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dunning", "serve", "--port", str(self.port)],
            env={**base, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"dunning serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"dunning serve did not start: {log.read_text()[-2000:]}"
            with contextlib.suppress(OSError):
                self.get("/l/probe")
                return
            time.sleep(0.1)

    def get(self, path: str) -> Answer:
        """GET ``path`` exactly as given (no client-side length limit or normalisation), no redirects."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return Answer(answer.status, answer.headers, answer.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve(world: Any, tmp_path: Path) -> Iterator[Serve]:
    """The server customers reach, on the world's database and simulated clock, with a billing portal set."""
    env = {
        "DUNNING_HOME": str(tmp_path / "serve-home"),
        "DUNNING_DATABASE_URL": world.rt.settings.database_url,
        "DUNNING_REDIS_URL": world.rt.settings.redis_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": LINK_SECRET,
        "DUNNING_PAYMENT_UPDATE_URL": PORTAL,
        "DUNNING_PORTAL_SECRET": PORTAL_SECRET,
    }
    server = Serve(env, tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def _emails(world: Any, to: str, kind: str) -> list[Any]:
    return [m for m in world.smtp.messages if to in m.rcpt_tos and m["X-Dunning-Kind"] == kind]


def _link_path(mail: Any) -> str:
    """The path of the one customer link in an email's text part."""
    text = mail.message.get_body(("plain",)).get_content()
    found = re.findall(r"https?://[^\s/]+(/l/[A-Za-z0-9_.\-]+)", text)
    assert len(found) == 1, text
    return found[0]


def _snapshot(world: Any) -> tuple[Any, ...]:
    """Everything a click could change."""
    with world.rt.sessions() as s:
        cases = s.execute(
            select(Case.id, Case.status, Case.attempts_made, Case.closed_at).order_by(Case.id)
        ).all()
        counts = tuple(
            s.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Outbox, Job, TimelineEntry, ChargeAttempt)
        )
        jobs = s.execute(select(Job.id, Job.status, Job.due_at).order_by(Job.id)).all()
    return tuple(cases), counts, tuple(jobs), len(world.smtp.messages), len(world.sandbox.state.calls())


def _portal_params(answer: Answer) -> dict[str, list[str]]:
    assert answer.status_code == 303, answer.text
    target = urlsplit(answer.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "billing.example.com", "/portal")
    return parse_qs(target.query, keep_blank_values=True, strict_parsing=True)


def _open_case(world: Any, cid: str = "cus_1", n: int = 1) -> tuple[int, str]:
    """A failed payment for a new customer; the case id and the link path of its first email."""
    email = f"c{n}@example.com"
    world.customer(cid, email=email, sub=f"sub_{n}")
    world.fail(f"in_{n}", sub=f"sub_{n}", cid=cid)
    world.settle()
    [mail] = _emails(world, email, "payment_failed")
    return world.case(f"in_{n}").id, _link_path(mail)


def test_redirect_carries_the_whole_customer_id_encoded_once(world: Any, serve: Serve) -> None:
    for n, cid in enumerate(HOSTILE_IDS, start=1):
        world.customer(cid, email=f"c{n}@example.com", sub=f"sub_{n}")
        world.fail(f"in_{n}", sub=f"sub_{n}", cid=cid)
    world.settle()
    before = _snapshot(world)
    for n, cid in enumerate(HOSTILE_IDS, start=1):
        [mail] = _emails(world, f"c{n}@example.com", "payment_failed")
        answer = serve.get(_link_path(mail))
        location = answer.headers.get("location", "")
        assert location.isascii() and " " not in location
        params = _portal_params(answer)
        # The whole id, in exactly one `customer` parameter: nothing cut at ':', nothing injected by '&'.
        assert params["customer"] == [cid], location
        assert sorted(params) == ["customer", "dunning_token"], location
        claims = verify_portal_token(params["dunning_token"][0], PORTAL_SECRET, customer=cid)
        assert (claims.purpose, claims.subject) == (
            UPDATE_PAYMENT_METHOD,
            case_subject(world.case(f"in_{n}").id),
        )
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        # A mail scanner fetching the link again changes nothing either.
        assert serve.get(_link_path(mail)).status_code == 303
    assert _snapshot(world) == before


def test_a_token_made_for_another_purpose_is_refused(world: Any, serve: Serve) -> None:
    case_id, path = _open_case(world)
    assert serve.get(path).status_code == 303  # the email's own link works
    signer = LinkSigner(LINK_SECRET, "http://localhost:8000")
    now = world.rt.clock.now()
    # Other purposes for the right customer and case; and the right purpose for another customer.
    for purpose, customer in [
        ("pick_option", "cus_1"),
        ("confirm_plan", "cus_1"),
        (UPDATE_PAYMENT_METHOD, "cus_2"),
    ]:
        token = signer.token(
            purpose=purpose,
            customer=customer,
            subject=case_subject(case_id),
            expires_at=now + timedelta(days=1),
        )
        answer = serve.get(f"/l/{token}")
        assert answer.status_code == 404, (purpose, customer)
        assert "location" not in answer.headers
        assert "Link no longer valid" in answer.text


def test_link_of_a_recovered_case_says_already_resolved(world: Any, serve: Serve) -> None:
    _, path = _open_case(world)
    assert serve.get(path).status_code == 303
    world.paid("in_1", sub="sub_1")  # invoice.paid through the normal path
    world.settle()
    assert world.case("in_1").status == "recovered"
    before = _snapshot(world)
    answer = serve.get(path)
    assert answer.status_code == 200
    assert "location" not in answer.headers
    assert "already resolved" in answer.text.lower()
    assert "settled" in answer.text
    assert _snapshot(world) == before

    # The "thank you" email links to the account instead: that link still goes on to the portal,
    # with a token the portal's card form refuses.
    [thanks] = _emails(world, "c1@example.com", "payment_recovered")
    params = _portal_params(serve.get(_link_path(thanks)))
    token = params["dunning_token"][0]
    assert (
        verify_portal_token(token, PORTAL_SECRET, customer="cus_1", purpose=MANAGE_ACCOUNT).purpose
        == MANAGE_ACCOUNT
    )
    with pytest.raises(PortalTokenError, match="another purpose"):
        verify_portal_token(token, PORTAL_SECRET, customer="cus_1")


def test_portal_token_is_short_lived_and_bound_to_its_parameters(world: Any, serve: Serve) -> None:
    case_id, path = _open_case(world, "org:123")
    params = _portal_params(serve.get(path))
    token = params["dunning_token"][0]
    claims = verify_portal_token(token, PORTAL_SECRET, customer=params["customer"][0])
    assert (claims.customer, claims.subject) == ("org:123", case_subject(case_id))
    assert claims.expires_at <= time.time() + 10 * 60 + 1  # minutes, not the link's 21 days

    with pytest.raises(PortalTokenError, match="expired"):
        verify_portal_token(token, PORTAL_SECRET, customer="org:123", now=claims.expires_at)
    assert verify_portal_token(token, PORTAL_SECRET, customer="org:123", now=claims.expires_at - 1) == claims
    # Another customer in the URL than the one the token names.
    with pytest.raises(PortalTokenError, match="another customer"):
        verify_portal_token(token, PORTAL_SECRET, customer="org")
    # Claims edited in the token itself.
    body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for field, value in [
        ("c", "org:124"),
        ("e", data["e"] + 86400),
        ("s", "case:999"),
        ("p", MANAGE_ACCOUNT),
    ]:
        forged = json.dumps({**data, field: value}, sort_keys=True, separators=(",", ":")).encode()
        edited = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
        with pytest.raises(PortalTokenError, match="bad signature"):
            verify_portal_token(f"{edited}.{sig}", PORTAL_SECRET)
    with pytest.raises(PortalTokenError, match="bad signature"):
        verify_portal_token(token, "another-secret")


def test_without_a_portal_the_link_opens_a_page_until_it_expires(world: Any, tmp_path: Path) -> None:
    _, path = _open_case(world, "org:123")
    env = {
        "DUNNING_HOME": str(tmp_path / "plain-home"),
        "DUNNING_DATABASE_URL": world.rt.settings.database_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": LINK_SECRET,
    }
    server = Serve(env, tmp_path / "plain.log")
    try:
        page = server.get(path)
        assert page.status_code == 200
        assert "Update your payment method" in page.text
        assert "<code>org:123</code>" in page.text
        body, sig = path.removeprefix("/l/").split(".")
        tampered = f"{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"
        assert server.get(f"/l/{tampered}").status_code == 404
        world.rt.clock.advance(timedelta(days=world.rt.tuning.link_ttl_days, seconds=1))
        expired = server.get(path)
        assert expired.status_code == 410
        assert "expired" in expired.text
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Hostile tokens: a real server on its own database, no workers needed


@pytest.fixture(scope="module")
def bare_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    from dunning.runtime import build_runtime
    from dunning.settings import load_settings
    from dunning.store.migrate import upgrade

    home = tmp_path_factory.mktemp("hostile")
    env = {
        "DUNNING_HOME": str(home),
        "DUNNING_DATABASE_URL": f"sqlite:///{home / 'dunning.db'}",
        "DUNNING_LINK_SECRET": LINK_SECRET,
        "DUNNING_PAYMENT_UPDATE_URL": PORTAL,
        "DUNNING_PORTAL_SECRET": PORTAL_SECRET,
    }
    rt = build_runtime(load_settings(env))
    upgrade(rt.engine)
    rt.close()
    server = Serve(env, home / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def _signed(body: bytes) -> str:
    """A token with a correct signature over ``body`` (which need not be JSON, or valid claims)."""
    signer = LinkSigner(LINK_SECRET, "http://localhost:8000")
    encoded = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return f"{encoded}.{signer._sign(encoded)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


HOSTILE_TOKENS = {
    "unicode": "ünïcødé😀.签名",
    "100 KB": "A" * 100_000,
    "100 KB with a dot": "A" * 50_000 + "." + "B" * 50_000,
    "bad base64": "!!!not*base64.@@@",
    "bad base64 padding": "A.B",
    "empty signature": "eyJ9.",
    "many dots": "a.b.c.d",
    "garbage JSON, unsigned": f"{_b64(b'{not json')}.{_b64(b'x' * 18)}",
    "garbage JSON, signed": _signed(b"{not json"),
    "not UTF-8, signed": _signed(b"\xff\xfe\xfd"),
    "JSON list, signed": _signed(b"[1, 2, 3]"),
    "huge expiry, signed": _signed(_claims(v=2, p="update_payment_method", c="c", s="case:1", e=10**30)),
    "infinite expiry, signed": _signed(b'{"v":2,"p":"update_payment_method","c":"c","s":"case:1","e":1e999}'),
    "float expiry, signed": _signed(_claims(v=2, p="update_payment_method", c="c", s="case:1", e=1.5e9)),
    "wrong types, signed": _signed(_claims(v=2, p=["update_payment_method"], c={"a": 1}, s=3, e="soon")),
    "huge case id, signed": _signed(
        _claims(v=2, p="update_payment_method", c="c", s="case:" + "9" * 40, e=2**33)
    ),
    "case id past int4, signed": _signed(
        _claims(v=2, p="update_payment_method", c="c", s="case:2147483648", e=2**33)
    ),
    "unknown case, signed": _signed(_claims(v=2, p="update_payment_method", c="c", s="case:7", e=2**33)),
    "legacy, no case, signed": _signed(_claims(p="update_payment_method", s="cus_1", e=2**33)),
    "legacy, unknown case, signed": _signed(_claims(p="update_payment_method", s="cus_1:12", e=2**33)),
    "NUL and controls": "a\x00b.\x01\x02",
}


@pytest.mark.parametrize("token", list(HOSTILE_TOKENS.values()), ids=list(HOSTILE_TOKENS))
def test_hostile_tokens_get_the_fresh_link_page_never_a_500(bare_serve: Serve, token: str) -> None:
    answer = bare_serve.get("/l/" + quote(token, safe=""))
    assert answer.status_code in (404, 410), answer.text[:300]
    assert "Link no longer valid" in answer.text
    assert "send a fresh link" in answer.text
    assert "location" not in answer.headers


def test_expired_link_is_410(bare_serve: Serve) -> None:
    token = _signed(_claims(v=2, p="update_payment_method", c="c", s="case:1", e=1_000_000_000))
    answer = bare_serve.get(f"/l/{token}")
    assert answer.status_code == 410
    assert "expired" in answer.text


def test_arbitrary_tokens_never_500(bare_serve: Serve) -> None:
    @settings(max_examples=80, deadline=None, database=None)
    @given(
        st.one_of(
            st.text(min_size=1, max_size=300),
            st.binary(max_size=300).map(lambda b: _b64(b) + "." + _b64(b[:18])),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("pcsev"), inner),
                max_leaves=12,
            ).map(lambda value: _signed(json.dumps(value).encode())),
        )
    )
    def probe(token: str) -> None:
        answer = bare_serve.get("/l/" + quote(token, safe=""))
        assert answer.status_code in (404, 410), (token, answer.status_code, answer.text[:300])

    probe()
