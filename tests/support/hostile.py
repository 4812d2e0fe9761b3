"""Hypothesis strategies for hostile input: envelopes, message wrappers and bytes a producer could send.

Shared by the property tests of the queue path (decoding and validation, in
process) and of the HTTP path (the real app). Sizes stay small so that a few
hundred examples run in seconds, except for the few shapes that must be big
to matter (deep nesting, long numbers), which are built directly as text.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from hypothesis import strategies as st

WHEN = "2026-11-02T10:00:00Z"

#: One valid envelope per type: the base that mutations start from.
VALID: list[dict[str, Any]] = [
    {
        "id": "evt_c",
        "type": "customer.upserted",
        "occurred_at": WHEN,
        "data": {"customer": {"id": "c1", "email": "c1@example.com", "name": "C", "timezone": "UTC"}},
    },
    {
        "id": "evt_s",
        "type": "subscription.upserted",
        "occurred_at": WHEN,
        "data": {
            "subscription": {
                "id": "s1",
                "customer_id": "c1",
                "plan": "pro",
                "status": "active",
                "amount_minor": 4900,
                "currency": "EUR",
                "interval": "month",
                "current_period_end": "2026-12-02T10:00:00Z",
                "payment_method": {"present": True, "last4": "4242", "exp_month": 12, "exp_year": 2030},
            }
        },
    },
    {
        "id": "evt_f",
        "type": "invoice.payment_failed",
        "occurred_at": WHEN,
        "data": {
            "invoice": {
                "id": "in1",
                "subscription_id": "s1",
                "customer_id": "c1",
                "amount_minor": 4900,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    },
    {
        "id": "evt_p",
        "type": "invoice.paid",
        "occurred_at": WHEN,
        "data": {"invoice": {"id": "in1", "subscription_id": "s1", "amount_minor": 4900, "currency": "EUR"}},
    },
    {
        "id": "evt_u",
        "type": "payment_method.updated",
        "occurred_at": WHEN,
        "data": {"customer_id": "c1", "payment_method": {"present": False}},
    },
    {
        "id": "evt_x",
        "type": "subscription.canceled",
        "occurred_at": WHEN,
        "data": {"subscription_id": "s1", "reason": "asked"},
    },
]

# Text of any code point, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
any_number = st.one_of(
    st.integers(),
    st.integers(min_value=10**18, max_value=10**60),
    st.integers(min_value=-(10**60), max_value=-(10**18)),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(
    st.none(), st.booleans(), any_number, any_text, st.sampled_from(["", "EUR", "4900", WHEN])
)

#: Random JSON-ish trees (Python values: NaN, infinities, huge ints and lone surrogates included).
json_trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(any_text, st.sampled_from(["id", "type", "data"])), children, max_size=4),
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of alternating arrays and objects around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    return out


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> Any:
    """A valid envelope with one place (or the whole of it) replaced by something hostile."""
    envelope = copy.deepcopy(draw(st.sampled_from(VALID)))
    path = draw(st.sampled_from(_paths(envelope)))
    replacement = draw(
        st.one_of(
            json_trees,
            st.integers(min_value=0, max_value=120).map(nested),
            st.sampled_from([True, False, "4900", 4900.0, 10**25, -1, 0, "XYZ", "eur", "a@b.c d"]),
            st.sampled_from(["victim@example.com,postmaster", "Ada <a@example.com>", "a@example.com\r\n"]),
        )
    )
    if not path:
        return replacement
    target = envelope
    for key in path[:-1]:
        target = target[key]
    if draw(st.booleans()):
        target[path[-1]] = replacement
    else:
        target[draw(any_text)] = replacement  # an extra field: ignored, unless it breaks a limit
    return envelope


#: Anything the Python client or an already-decoded message could hand to validation.
hostile_values = st.one_of(json_trees, mutated_envelopes())


def _dumps(value: Any) -> bytes:
    """JSON text of a Python value as a careless producer would write it (NaN, lone surrogates and all)."""
    try:
        return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
    except ValueError:  # an int over Python's 4,300-digit str() limit
        return b"0"


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Bytes of an envelope: random bytes, broken JSON, deep nesting, long numbers, hostile values."""
    kind = draw(st.sampled_from(["bytes", "value", "deep", "digits", "spliced"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=6000))
        return b'{"id":"e","x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "digits":
        digits = draw(st.integers(min_value=1, max_value=6000))
        field = draw(st.sampled_from([b"amount_minor", b"x"]))
        base = json.dumps(VALID[2]).encode()
        return base.replace(b'"amount_minor": 4900', b'"' + field + b'": ' + b"9" * digits)
    body = _dumps(draw(hostile_values))
    if kind == "spliced" and body:
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.binary(max_size=8)) + body[at:]
    return body


def message_bytes(args: bytes, *, options: bytes | None = None, extra: bytes = b"") -> bytes:
    """A Dramatiq message whose ``args`` (and ``options``) are the given JSON text, as-is."""
    redis_id = str(uuid.uuid4()).encode()
    opts = options if options is not None else b'{"redis_message_id":"' + redis_id + b'"}'
    return (
        b'{"queue_name":"billing_events","actor_name":"ingest_event","args":'
        + args
        + b',"kwargs":{},"options":'
        + opts
        + b',"message_id":"'
        + str(uuid.uuid4()).encode()
        + b'","message_timestamp":0'
        + extra
        + b"}"
    )


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """Bytes on the queue: random bytes, or a message wrapper around hostile arguments or options."""
    kind = draw(st.sampled_from(["bytes", "args", "envelope", "options", "wrapper"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "args":
        return message_bytes(_dumps(draw(st.lists(hostile_values, max_size=3))))
    if kind == "envelope":
        return message_bytes(b"[" + draw(hostile_bodies()) + b"]")
    if kind == "options":
        options = draw(
            st.dictionaries(st.sampled_from(["redis_message_id", "retries", "eta", "throws"]), scalars)
        )
        return message_bytes(b"[" + _dumps(VALID[0]) + b"]", options=_dumps(options))
    wrapper = json.loads(message_bytes(b"[" + _dumps(VALID[0]) + b"]"))
    key = draw(st.sampled_from(sorted(wrapper)))
    wrapper[key] = draw(json_trees)
    return _dumps(wrapper)
