"""Hostile bodies and headers on signed ``POST /events``: 422 or 413 naming the problem, never a 5xx.

The first tests talk to the real ``dunning serve`` (uvicorn, a subprocess) over
HTTP; the property test drives the same app in process with Starlette's test
client, which is fast enough for a few hundred hypothesis examples. Accepted
events go to a Redis database of their own (index 7 of the suite's server),
where no worker of another test can see them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from tests.support.hostile import VALID, hostile_bodies, nested

from dunning.contract import MAX_EVENT_BYTES
from dunning.signing import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.integration

SECRET = "hostile-secret"
DB = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_url(redis_server: Any) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture(scope="module")
def server(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dunning serve`` on a free port, with its own SQLite database; yields its base URL."""
    home = tmp_path_factory.mktemp("hostile_http")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DUNNING_")},
        "DUNNING_HOME": str(home),
        "DUNNING_DATABASE_URL": f"sqlite:///{home / 'dunning.db'}",
        "DUNNING_REDIS_URL": _redis_url(redis_server),
        "DUNNING_INGEST_SECRET": SECRET,
    }
    subprocess.run(
        [sys.executable, "-m", "dunning", "db", "upgrade"], env=env, check=True, capture_output=True
    )
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dunning", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (home / "serve.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        redis.Redis.from_url(_redis_url(redis_server)).flushdb()


def _post(url: str, body: bytes, **headers: str) -> httpx.Response:
    signed = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(SECRET, body), **headers}
    return httpx.post(f"{url}/events", content=body, headers=signed, timeout=30)


def _refused(answer: httpx.Response, field: str, reason: str) -> None:
    assert answer.status_code == 422, (answer.status_code, answer.text)
    payload = answer.json()
    assert set(payload) == {"error", "field", "reason"}, payload
    assert payload["error"] == "invalid event"
    assert payload["field"] == field, payload
    assert reason in payload["reason"], payload


def _failure_text(amount: str = "4900", extra: str = "") -> bytes:
    text = json.dumps(VALID[2], separators=(",", ":")).replace(
        '"amount_minor":4900', f'"amount_minor":{amount}'
    )
    return (text[:-1] + extra + "}").encode()


def test_a_valid_event_is_accepted_by_the_real_server(server: str) -> None:
    # The control: the signature and the body are right, so the refusals below are about the body.
    answer = _post(server, _failure_text())
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": "evt_f"}


def test_deep_nesting_is_422_too_deep_not_500(server: str) -> None:
    _refused(_post(server, _failure_text(extra=',"x":' + "[" * 5000 + "]" * 5000)), "(envelope)", "too deep")
    _refused(_post(server, b"[" * 30_000 + b"]" * 30_000), "(envelope)", "too deep")
    # Within what the decoder takes, the answer says where.
    answer = _post(server, _failure_text(extra=',"x":' + json.dumps(nested(40))))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"].startswith("x[0].n[0]")
    assert "nested more than 32 levels deep" in answer.json()["reason"]


def test_huge_integers_are_422_number_too_large_not_500(server: str) -> None:
    _refused(_post(server, _failure_text("9" * 5000)), "(envelope)", "number too large: 5000 digits")
    _refused(_post(server, _failure_text("9" * 30)), "data.invoice.amount_minor", "number too large")
    _refused(_post(server, _failure_text(extra=',"x":' + "1" * 400)), "x", "number too large")


def test_values_the_schema_refuses_are_422_naming_the_field(server: str) -> None:
    _refused(_post(server, _failure_text("true")), "data.invoice.amount_minor", "valid integer")
    _refused(_post(server, _failure_text('"4900"')), "data.invoice.amount_minor", "valid integer")
    _refused(_post(server, _failure_text("4900.0")), "data.invoice.amount_minor", "valid integer")
    xyz = _failure_text().replace(b'"EUR"', b'"XYZ"')
    _refused(_post(server, xyz), "data.invoice.currency", "ISO-4217")
    customer = json.dumps(VALID[0]).replace("c1@example.com", "jörg@example.com").encode()
    _refused(_post(server, customer), "data.customer.email", "SMTPUTF8")
    two = json.dumps(VALID[0]).replace("c1@example.com", "victim@example.com,postmaster").encode()
    _refused(_post(server, two), "data.customer.email", "not a single email address")


def test_an_oversized_body_is_413_not_500(server: str) -> None:
    body = _failure_text(extra=',"x":"' + "y" * MAX_EVENT_BYTES + '"')
    answer = _post(server, body)
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"error": "invalid event", "field": "(envelope)", "reason": "too large"}


def test_a_signature_timestamp_of_thousands_of_digits_is_401_not_500(server: str) -> None:
    body = _failure_text()
    header = sign(SECRET, body).replace("t=", "t=" + "9" * 5000, 1)
    answer = httpx.post(f"{server}/events", content=body, headers={SIGNATURE_HEADER: header}, timeout=30)
    assert answer.status_code == 401, answer.text
    assert answer.json()["reason"] == "malformed header"


# -- property: the app never answers 5xx ----------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app (create_app) in process, on its own SQLite runtime and Redis database."""
    from dramatiq.brokers.redis import RedisBroker

    from dunning.http.app import create_app
    from dunning.runtime import build_runtime
    from dunning.settings import load_settings

    home = tmp_path_factory.mktemp("hostile_app")
    env = {
        "DUNNING_HOME": str(home),
        "DUNNING_DATABASE_URL": f"sqlite:///{home / 'dunning.db'}",
        "DUNNING_INGEST_SECRET": SECRET,
    }
    rt = build_runtime(load_settings(env))
    broker = RedisBroker(url=_redis_url(redis_server), middleware=[])
    try:
        with TestClient(create_app(rt, broker=broker), raise_server_exceptions=False) as client:
            yield client
    finally:
        broker.client.flushdb()
        broker.close()
        rt.close()


headers = st.dictionaries(
    st.sampled_from(["content-length", SIGNATURE_HEADER.lower(), "content-type"]),
    st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
        st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    ),
    max_size=2,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hostile_bodies(), signed=st.booleans(), extra=headers)
def test_post_events_never_answers_5xx(
    app_client: TestClient, body: bytes, signed: bool, extra: dict[str, str]
) -> None:
    sent = {SIGNATURE_HEADER: sign(SECRET, body)} if signed else {}
    if not signed:
        sent.update(extra)
    try:
        answer = app_client.post("/events", content=body, headers=sent)
    except (httpx.LocalProtocolError, ValueError):
        return  # a header the HTTP client itself refuses to send never reaches the app
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    assert answer.status_code in (202, 401, 413, 422), answer.status_code
    if answer.status_code == 422:
        payload = answer.json()
        assert set(payload) == {"error", "field", "reason"} and payload["reason"], payload
        assert "could not be validated" not in payload["reason"], payload


def test_a_content_length_of_thousands_of_digits_is_413_not_500(app_client: TestClient) -> None:
    body = json.dumps(VALID[0]).encode()
    answer = app_client.post("/events", content=body, headers={"content-length": "9" * 5000})
    assert answer.status_code == 413, (answer.status_code, answer.text[:300])
