"""Hostile bodies and headers on signed ``POST /events``: 400, 413, 415 or 422 naming the problem, never a 5xx.

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
    assert set(payload) == {"error", "field", "reason", "fields"}, payload
    assert payload["error"] == "invalid event"
    assert payload["field"] == field, payload
    assert reason in payload["reason"], payload
    # The first of the listed fields is the one named on its own (v1 clients read field/reason).
    assert payload["fields"][0] == {"path": payload["field"], "reason": payload["reason"]}, payload


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
    assert answer.json() == {
        "error": "invalid event",
        "field": "(envelope)",
        "reason": "too large",
        "fields": [{"path": "(envelope)", "reason": "too large"}],
    }


def test_a_signature_timestamp_of_thousands_of_digits_is_401_not_500(server: str) -> None:
    body = _failure_text()
    header = sign(SECRET, body).replace("t=", "t=" + "9" * 5000, 1)
    answer = httpx.post(f"{server}/events", content=body, headers={SIGNATURE_HEADER: header}, timeout=30)
    assert answer.status_code == 401, answer.text
    assert answer.json()["reason"] == "malformed header"


def test_a_422_lists_every_invalid_field_with_the_first_named_alone(server: str) -> None:
    sub = {
        "id": "evt_s_bad",
        "type": "subscription.upserted",
        "occurred_at": "2026-11-02T09:00:00Z",
        "data": {
            "subscription": {
                "id": "sub_1",
                "customer_id": "cus_1",
                "plan": "pro",
                "status": "trialing",
                "amount_minor": -1,
                "currency": "eur",
                "interval": "month",
                "current_period_end": "2026-12-02T09:00:00Z",
                "trial_end": "2026-10-01T00:00:00Z",
            }
        },
    }
    answer = _post(server, json.dumps(sub).encode())
    _refused(answer, "data.subscription.amount_minor", "greater than or equal to 0")
    paths = [f["path"] for f in answer.json()["fields"]]
    # Pydantic's errors, then the cross-field date check that a schema cannot express.
    assert paths == [
        "data.subscription.amount_minor",
        "data.subscription.currency",
        "data.subscription.trial_end",
    ]
    assert "trial cannot end" in answer.json()["fields"][2]["reason"]


def test_unparseable_json_is_400_and_a_wrong_content_type_is_415(server: str) -> None:
    answer = _post(server, b'{"id": "evt_x", "type": ')
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "(envelope)" and "not valid JSON" in answer.json()["reason"]
    assert answer.json()["fields"] == [{"path": "(envelope)", "reason": answer.json()["reason"]}]
    answer = _post(server, _failure_text(), **{"Content-Type": "text/plain"})
    assert answer.status_code == 415, answer.text
    assert answer.json()["error"] == "unsupported media type"
    # JSON that is not an event stays a 422, and so do the JSON limits.
    _refused(_post(server, b"[1]"), "(envelope)", "expected a JSON object")
    # A parameter or a +json type is still JSON; v1 never required the header, so none is fine.
    assert (
        _post(server, _failure_text(), **{"Content-Type": "application/json; charset=utf-8"}).status_code
        == 202
    )
    assert _post(server, _failure_text(), **{"Content-Type": "application/event+json"}).status_code == 202
    body = _failure_text()
    answer = httpx.post(f"{server}/events", content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)})
    assert answer.status_code == 202, answer.text


FIVE_MB = 5 * 1024 * 1024


def test_a_5_mb_body_from_urllib_gets_a_readable_413(server: str) -> None:
    # urllib sends the whole body before it reads a byte of the answer: the server drains, then answers.
    import urllib.error
    import urllib.request

    body = b"x" * FIVE_MB
    request = urllib.request.Request(
        f"{server}/events",
        data=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(SECRET, body)},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["reason"] == "too large"


def test_a_5_mb_body_on_a_raw_socket_gets_a_readable_413(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"POST /events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {FIVE_MB}\r\n{SIGNATURE_HEADER}: t=1,v1=00\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"x" * FIVE_MB)  # everything first, like the simplest client
        answer = b""
        while b"}" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"reason":"too large"' in answer


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
    assert answer.status_code in (202, 400, 401, 413, 415, 422), answer.status_code
    if answer.status_code in (400, 422):
        payload = answer.json()
        assert set(payload) == {"error", "field", "reason", "fields"} and payload["reason"], payload
        assert payload["fields"] and all(f["path"] and f["reason"] for f in payload["fields"]), payload
        assert "could not be validated" not in payload["reason"], payload


def test_a_content_length_of_thousands_of_digits_is_413_not_500(app_client: TestClient) -> None:
    body = json.dumps(VALID[0]).encode()
    answer = app_client.post("/events", content=body, headers={"content-length": "9" * 5000})
    assert answer.status_code == 413, (answer.status_code, answer.text[:300])
