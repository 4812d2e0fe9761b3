"""Inbound billing events (contract §1): one schema module for every way in.

The Python client, the HTTP ingest endpoint and the ``ingest_event`` actor all
call :func:`parse_event`, so a producer gets the same verdict whichever path it
uses. Errors name the field and the reason but never echo the offending value:
the value may be customer data and error texts end up in logs and dead letters.

Validation is as strict as the published schema (``docs/events.schema.json``,
generated from these models): no coercion anywhere (``true``, ``"4900"`` and
``4900.0`` are not integers, ``1`` is not a boolean, a date-time is an RFC 3339
string), currencies from the ISO-4217 list Babel ships, one plain email address
per customer. Before the models see anything, :mod:`dunning.contract.untrusted_json`
refuses what is too deep, too large or not JSON at all, so :func:`parse_event`
raises :class:`InvalidEvent` and nothing else, whatever it is given.
"""

from __future__ import annotations

import json
import logging
import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from dunning.contract.dates import date_problems
from dunning.contract.fields import CURRENCIES as CURRENCIES
from dunning.contract.fields import Currency, Email, Timestamp
from dunning.contract.untrusted_json import MAX_DEPTH as MAX_DEPTH
from dunning.contract.untrusted_json import MAX_INT_DIGITS as MAX_INT_DIGITS
from dunning.contract.untrusted_json import JsonRefused, check_tree, loads, too_deep
from dunning.errors import Refused

log = logging.getLogger(__name__)

#: Largest accepted envelope, in bytes of JSON. Real events are a few hundred bytes.
MAX_EVENT_BYTES = 64 * 1024

QUEUE = "billing_events"
ACTOR = "ingest_event"

Id = Annotated[str, Field(min_length=1, max_length=255)]
Minor = Annotated[int, Field(ge=0, le=10**12, description="amount in minor units (cents)")]


class _Model(BaseModel):
    # Tolerant reader: producers may add fields without breaking us. Strict: no coercion of types.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL: refused here, such an event would fail on every retry.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character (U+0000)")
        return value


class PaymentMethod(_Model):
    present: bool
    brand: str | None = Field(default=None, max_length=40)
    last4: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    exp_month: int | None = Field(default=None, ge=1, le=12)
    exp_year: int | None = Field(default=None, ge=2000, le=2200)


class Customer(_Model):
    id: Id
    email: Email
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    timezone: str | None = Field(default=None, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("unknown IANA time zone") from None
        return value


class TemporaryUpgrade(_Model):
    plan: Id
    ends_at: Timestamp
    revert_to: Id


class Subscription(_Model):
    id: Id
    customer_id: Id
    plan: Id
    status: Literal["trialing", "active", "past_due", "unpaid", "canceled", "incomplete", "paused"]
    amount_minor: Minor
    currency: Currency
    interval: Literal["day", "week", "month", "year"]
    interval_count: int = Field(default=1, ge=1, le=36)
    #: v1.1: when the customer first subscribed (tenure); default: when we first saw the subscription.
    started_at: Timestamp | None = None
    trial_end: Timestamp | None = None
    current_period_end: Timestamp
    cancel_at_period_end: bool = False
    payment_method: PaymentMethod | None = None
    temporary_upgrade: TemporaryUpgrade | None = None


class FailedInvoice(_Model):
    id: Id
    subscription_id: Id
    customer_id: Id
    amount_minor: Annotated[int, Field(gt=0, le=10**12)]
    currency: Currency


class PaidInvoice(_Model):
    id: Id
    subscription_id: Id
    amount_minor: Minor
    currency: Currency


class CustomerUpsertedData(_Model):
    customer: Customer


class SubscriptionUpsertedData(_Model):
    subscription: Subscription


class PaymentFailedData(_Model):
    invoice: FailedInvoice
    decline_code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
    failure_message: str | None = Field(default=None, max_length=500)


class InvoicePaidData(_Model):
    invoice: PaidInvoice


class PaymentMethodUpdatedData(_Model):
    customer_id: Id
    payment_method: PaymentMethod


class SubscriptionCanceledData(_Model):
    subscription_id: Id
    reason: str | None = Field(default=None, max_length=200)


class _Envelope(_Model):
    id: Id
    occurred_at: Timestamp


class CustomerUpserted(_Envelope):
    type: Literal["customer.upserted"]
    data: CustomerUpsertedData


class SubscriptionUpserted(_Envelope):
    type: Literal["subscription.upserted"]
    data: SubscriptionUpsertedData


class InvoicePaymentFailed(_Envelope):
    type: Literal["invoice.payment_failed"]
    data: PaymentFailedData


class InvoicePaid(_Envelope):
    type: Literal["invoice.paid"]
    data: InvoicePaidData


class PaymentMethodUpdated(_Envelope):
    type: Literal["payment_method.updated"]
    data: PaymentMethodUpdatedData


class SubscriptionCanceled(_Envelope):
    type: Literal["subscription.canceled"]
    data: SubscriptionCanceledData


Event = Annotated[
    CustomerUpserted
    | SubscriptionUpserted
    | InvoicePaymentFailed
    | InvoicePaid
    | PaymentMethodUpdated
    | SubscriptionCanceled,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "customer.upserted",
    "subscription.upserted",
    "invoice.payment_failed",
    "invoice.paid",
    "payment_method.updated",
    "subscription.canceled",
)

_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class InvalidEvent(Refused):
    """An event we refuse: ``field`` is a dotted path, ``reason`` says why.

    ``problems`` lists every invalid field found, as ``(path, reason)`` pairs, the
    first being ``(field, reason)``. ``malformed`` is True when the input is not
    JSON at all (HTTP answers 400 rather than 422). Never retried: the same bytes
    would fail the same way.
    """

    field: str

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        event_id: str | None = None,
        problems: list[tuple[str, str]] | None = None,
        malformed: bool = False,
    ) -> None:
        super().__init__(field, reason)
        self.event_id = event_id
        self.problems: list[tuple[str, str]] = problems or [(field, reason)]
        self.malformed = malformed

    @property
    def fields(self) -> list[dict[str, str]]:
        """Every problem as ``{"path", "reason"}``, as HTTP answers and dead letters show them."""
        return [{"path": path, "reason": reason} for path, reason in self.problems]


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in EVENT_TYPES:
            continue  # pydantic puts the union tag in the path; users never wrote it
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(envelope)"


#: A key shown as is in an error path; any other key is shown as ``<key>`` (keys are the producer's text).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: ``dead_letters.field`` holds 255 characters.
_MAX_FIELD = 255


def _path(path: tuple[str | int, ...]) -> str:
    """A walker's path as a dotted field, without repeating keys that are not plain names."""
    parts: list[str] = []
    for item in path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + (item if _PLAIN_KEY.fullmatch(item) else "<key>"))
    text = "".join(parts) or "(envelope)"
    return text if len(text) <= _MAX_FIELD else text[: _MAX_FIELD - 1] + "…"


def parse_event(raw: Any) -> Event:
    """Validate an envelope (dict, JSON text or bytes) and return the typed event.

    Raises :class:`InvalidEvent` naming the first wrong field, and nothing else
    whatever ``raw`` is: the consumer relies on it to park, never loop or crash.
    """
    try:
        return _parse(raw)
    except InvalidEvent:
        raise
    except Exception as exc:
        # A gap in the checks above, not the producer's fault alone: refused (never retried in a
        # loop) and logged, type only, so that it gets fixed.
        log.error("event validation failed unexpectedly: %s", type(exc).__name__)
        raise InvalidEvent("(envelope)", f"could not be validated ({type(exc).__name__})") from None


def parse_message_args(args: Any, kwargs: Any) -> Event:
    """The event of an ``ingest_event`` message: exactly one positional argument, the envelope, no kwargs.

    What the actor runs (the queue path); like :func:`parse_event`, raises
    :class:`InvalidEvent` and nothing else.
    """
    if not isinstance(args, list | tuple) or len(args) != 1 or kwargs:
        raise InvalidEvent(
            "args", "expected exactly one positional argument, the event envelope, and no kwargs"
        )
    return parse_event(args[0])


def _too_big(size: int, event_id: str | None = None) -> InvalidEvent:
    return InvalidEvent(
        "(envelope)", f"event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit", event_id=event_id
    )


def _parse(raw: Any) -> Event:
    if isinstance(raw, str | bytes | bytearray):
        size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
        if size > MAX_EVENT_BYTES:
            raise _too_big(size)
        try:
            raw = loads(raw)
        except JsonRefused as exc:
            reason = f"not valid JSON ({exc.reason})" if exc.syntax else exc.reason
            if exc.depth:  # deeper than the decoder goes, so deeper than an envelope may be
                reason = too_deep(MAX_DEPTH)
            raise InvalidEvent("(envelope)", reason, malformed=exc.syntax) from None
    if not isinstance(raw, dict):
        kind = "null" if raw is None else type(raw).__name__
        raise InvalidEvent("(envelope)", f"expected a JSON object, got {kind}")
    event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    try:
        check_tree(raw)
    except JsonRefused as exc:
        raise InvalidEvent(_path(exc.path), exc.reason, event_id=event_id) from None
    try:
        size = len(orjson.dumps(raw))
    except TypeError:  # an integer over 64 bits (checked above: at most 20 digits)
        size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_EVENT_BYTES:
        raise _too_big(size, event_id)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent(
            "type", f"unknown event type; expected one of {', '.join(EVENT_TYPES)}", event_id=event_id
        )
    problems: list[tuple[str, str]] = []
    event: Event | None = None
    try:
        event = _adapter.validate_python(raw)
    except ValidationError as exc:
        problems = [
            (_loc(tuple(e["loc"])), e["msg"]) for e in exc.errors(include_url=False, include_input=False)
        ]
    if kind == "subscription.upserted":
        # Cross-field checks run even when other fields are wrong, so one answer lists every problem.
        seen = {path for path, _ in problems}
        problems += [p for p in date_problems(raw) if p[0] not in seen]
    if problems:
        field, reason = problems[0]
        raise InvalidEvent(field, reason, event_id=event_id, problems=_unique(problems))
    assert event is not None
    return event


def _unique(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Without repeats (a union can report one path twice), in order."""
    return list(dict.fromkeys(problems))


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the envelope, published as ``docs/events.schema.json``."""
    schema = _adapter.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://dunning.example/schemas/events-v1.json"
    schema["title"] = "Dunning billing event (contract v1)"
    return schema


def to_wire(event: Event) -> dict[str, Any]:
    """The JSON-ready dict for an event (what goes on the broker)."""
    return event.model_dump(mode="json", exclude_none=True)


def utc(dt: datetime) -> datetime:
    """Normalise an aware datetime to UTC."""
    from datetime import UTC

    return dt.astimezone(UTC)
