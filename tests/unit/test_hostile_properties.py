"""Property tests: whatever a producer sends, the queue path refuses with a reason and never raises anything else.

The consumer decodes the bytes it fetched with ``decode_message`` (refusal:
``NotAMessage``); the ``ingest_event`` actor validates the arguments with
``parse_message_args`` (refusal: ``InvalidEvent``); the HTTP route and the
Python client call ``parse_event`` (``InvalidEvent``). Anything else escaping
them is a crashed consumer or a message retried in a loop. A refusal always
names a field (short enough for ``dead_letters.field``) and a reason, and
never comes from the last-resort "could not be validated" branch, which would
mean a check is missing.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.support.hostile import (
    VALID,
    any_text,
    hostile_bodies,
    hostile_messages,
    hostile_values,
    message_bytes,
    mutated_envelopes,
    nested,
    scalars,
)

from dunning.broker.decode import NotAMessage, decode_message
from dunning.contract import InvalidEvent, parse_event, parse_message_args, to_wire

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "events.schema.json").read_text())


def _check_refusal(exc: InvalidEvent) -> None:
    assert isinstance(exc.field, str) and 0 < len(exc.field) <= 255, exc.field
    assert isinstance(exc.reason, str) and exc.reason.strip(), exc.reason
    assert "could not be validated" not in exc.reason, exc.reason  # the last-resort branch
    json.dumps({"field": exc.field, "reason": exc.reason}, ensure_ascii=False).encode("utf-8")


def _validate(call: Any, *args: Any) -> Any:
    try:
        event = call(*args)
    except InvalidEvent as exc:
        _check_refusal(exc)
        return None
    # Accepted: what goes on the broker is accepted again, unchanged (a requeue gives the same verdict).
    wire = to_wire(event)
    assert parse_event(json.dumps(wire).encode()) == event
    return event


@FAST
@given(hostile_values)
def test_parse_event_refuses_any_python_value_with_a_reason(value: Any) -> None:
    _validate(parse_event, value)


@FAST
@given(hostile_bodies())
def test_parse_event_refuses_any_bytes_with_a_reason(body: bytes) -> None:
    _validate(parse_event, body)


@FAST
@given(hostile_messages())
def test_the_consumer_and_the_actor_refuse_any_bytes_with_a_reason(data: bytes) -> None:
    try:
        message = decode_message(data)
    except NotAMessage as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip()
        assert "not decodable" not in exc.reason, exc.reason  # the last-resort branch
        return
    # Decoded: the actor's validation refuses or accepts, and the message can be parked as is.
    json.dumps(message.asdict())
    _validate(parse_message_args, message.args, message.kwargs)


@FAST
@given(mutated_envelopes())
def test_whatever_the_published_schema_refuses_is_refused(value: Any) -> None:
    # Python's re (used by jsonschema) lets "$" match before a final newline; ECMA-262 does not.
    assume("\n" not in json.dumps(value))
    try:
        schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(value)
    except (RecursionError, ValueError, OverflowError):
        return  # beyond what the validator itself can take; covered by the limits above
    if not schema_ok:
        with pytest.raises(InvalidEvent):
            parse_event(copy.deepcopy(value))


# -- the specific shapes of the reported defect, at full size -------------------------------------


@pytest.mark.parametrize("depth", [33, 101, 999, 5_000, 32_000])
def test_deep_nesting_is_refused_naming_the_problem(depth: int) -> None:
    body = b'{"id":"e","x":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body)
    assert "too deep" in caught.value.reason and "32" in caught.value.reason
    envelope = {**VALID[0], "extra": nested(depth)} if depth < 500 else None
    if envelope is not None:
        with pytest.raises(InvalidEvent) as caught:
            parse_event(envelope)
        assert caught.value.field.startswith("extra"), caught.value.field
        assert "too deep" in caught.value.reason


@pytest.mark.parametrize("digits", [21, 400, 4_300, 5_000, 50_000])
def test_huge_integers_are_refused_naming_the_problem(digits: int) -> None:
    body = json.dumps(VALID[2]).replace('"amount_minor": 4900', '"amount_minor": ' + "7" * digits)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body.encode())
    assert "number too large" in caught.value.reason
    if digits <= 1000:  # decoded, then found where it is
        assert caught.value.field == "data.invoice.amount_minor"
    decoded_message = message_bytes(b"[" + body.encode() + b"]")
    try:
        message = decode_message(decoded_message)
    except NotAMessage as exc:
        assert digits > 1000 and "number too large" in exc.reason
        return
    with pytest.raises(InvalidEvent) as caught:
        parse_message_args(message.args, message.kwargs)
    assert caught.value.field == "data.invoice.amount_minor"
    assert "number too large" in caught.value.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{}", "invalid UTF-8 at byte"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"id": "a", "id": "b"}', "same key twice"),
        (b'{"a": 1' + b"0" * 2000 + b".5}", "number too long"),
    ],
)
def test_what_json_itself_cannot_carry_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body)
    assert caught.value.field == "(envelope)"
    assert reason in caught.value.reason
    with pytest.raises(NotAMessage) as not_message:
        decode_message(message_bytes(b"[" + body + b"]"))
    assert reason in not_message.value.reason


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (b"{}", "options.redis_message_id is missing"),
        (b'{"redis_message_id": 7}', "options.redis_message_id is missing or not a string"),
        (b'{"redis_message_id": "r", "retries": "many"}', "options.retries is not an integer"),
        (b'{"redis_message_id": "r", "max_retries": true}', "options.max_retries is not an integer"),
        (b'{"redis_message_id": "r", "throws": ["ValueError"]}', "options.throws cannot be set"),
    ],
)
def test_options_that_would_break_acknowledgement_or_retries_are_refused(options: bytes, reason: str) -> None:
    with pytest.raises(NotAMessage) as caught:
        decode_message(message_bytes(b"[" + json.dumps(VALID[0]).encode() + b"]", options=options))
    assert reason in caught.value.reason


def test_a_lone_surrogate_is_refused_where_it_is() -> None:
    envelope = copy.deepcopy(VALID[0])
    envelope["data"]["customer"]["name"] = "Ada \ud800"
    with pytest.raises(InvalidEvent) as caught:
        parse_event(envelope)
    assert caught.value.field == "data.customer.name"
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(envelope).encode())  # the same, escaped as JSON sends it
    assert caught.value.field == "data.customer.name"


@st.composite
def _keys(draw: st.DrawFn) -> str:
    return draw(st.text(min_size=1, max_size=300))


@settings(max_examples=100, deadline=None)
@given(_keys())
def test_a_field_path_never_repeats_a_key_that_is_not_a_plain_name(key: str) -> None:
    envelope = {**VALID[0], key: nested(40)}
    with pytest.raises(InvalidEvent) as caught:
        parse_event(envelope)
    field = caught.value.field
    assert len(field) <= 255
    # The code's rule for a plain key: [A-Za-z0-9_-]{1,64} ("-" alone is plain, and shown).
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        assert key not in field or key in "<key>[0].n", field


_Str = type("Str", (str,), {})  # a subclass of str: not a type the quick pass knows
_odd_values = st.sampled_from(
    [
        float("inf"),
        float("-inf"),
        float("nan"),
        10**20,
        -(10**20),
        10**19,
        "\ud800",
        "é",
        (1,),
        {1},
        b"x",
        {1: None},
        _Str("x"),
        True,
        None,
        1.5,
    ]
)
_trees_with_odd_values = st.recursive(
    st.one_of(scalars, _odd_values),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=8,
)


@FAST
@given(_trees_with_odd_values, st.integers(min_value=0, max_value=6))
def test_the_quick_pass_of_check_tree_only_accepts_what_the_full_walk_accepts(value: Any, depth: int) -> None:
    """``check_tree`` skips its full walk when a quick pass finds nothing odd: that pass may only be stricter."""
    from dunning.contract.untrusted_json import JsonRefused, _clean, _walk

    if _clean(value, depth):
        _walk(value, depth)  # must not raise
    try:
        _walk(value, depth)
    except JsonRefused:
        assert not _clean(value, depth)


@FAST
@given(hostile_bodies())
def test_short_texts_decode_alike_with_or_without_the_number_hooks(body: bytes) -> None:
    """``loads`` skips its number hooks on texts too short to hold a number over the limit: same verdicts."""
    from dunning.contract.untrusted_json import _LONG, _SHORT, DECODE_MAX_NUMBER_CHARS

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return
    assume(len(text) <= DECODE_MAX_NUMBER_CHARS)

    def verdict(decoder: json.JSONDecoder) -> Any:
        try:
            return ("value", repr(decoder.decode(text)))
        except Exception as exc:
            return ("refused", type(exc).__name__, str(exc))

    assert verdict(_SHORT) == verdict(_LONG)
