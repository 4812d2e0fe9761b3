"""Field types of the event contract that need more than a pydantic constraint.

Each validates in code exactly what ``docs/events.schema.json`` publishes for it
(an enum, an RFC 3339 date-time, an address pattern), and refuses with a reason
that does not repeat the value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from babel.numbers import list_currencies
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    Strict,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, core_schema

# -- currencies ---------------------------------------------------------------------------------

#: ISO-4217 codes as Babel (CLDR) knows them, historical ones included.
CURRENCIES: frozenset[str] = frozenset(list_currencies())


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise PydanticCustomError("currency", "not an ISO-4217 currency code (upper case, such as EUR)")
    return value


class _CurrencyCode:
    """Annotation: a string among :data:`CURRENCIES`, published once as ``$defs/Currency`` (an enum)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        codes = sorted(CURRENCIES)
        return core_schema.no_info_after_validator_function(
            _currency,
            core_schema.str_schema(strict=True),
            ref="Currency",
            metadata={
                "pydantic_js_functions": [
                    lambda _schema, _handler: {
                        "type": "string",
                        "enum": codes,
                        "description": "ISO-4217 currency code, upper case",
                    }
                ]
            },
        )


Currency = Annotated[str, _CurrencyCode]

# -- date-times ---------------------------------------------------------------------------------

#: RFC 3339 ``date-time`` (section 5.6), with its offset required.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


def _rfc3339(value: Any) -> Any:
    # Pydantic's own parser also takes Unix times and other spellings; the schema promises RFC 3339.
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_format",
            "Input should be an RFC 3339 date-time with an offset, such as 2026-11-22T10:00:00Z",
        )
    return value


Timestamp = Annotated[
    AwareDatetime,
    Strict(False),
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]

# -- email addresses ----------------------------------------------------------------------------

#: One RFC 5322 addr-spec: an ASCII dot-atom, ``@``, a domain (internationalized names allowed).
EMAIL_PATTERN = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[^\s@\"(),:;<>\[\]\\.]+(\.[^\s@\"(),:;<>\[\]\\.]+)+$"
)
_EMAIL = re.compile(EMAIL_PATTERN)
#: A local part that would be fine but for its non-ASCII letters.
_ATOMISH = re.compile(r"[^\s<>@,;:\"()\[\]\\]+")
#: What email-validator says after a colon or in parentheses is a piece of the address: not repeated.
_QUOTED_PART = re.compile(r"(:\s.*|\s\(.*\))\.?$")


def _email(value: str) -> str:
    """A single deliverable-looking address, returned in ASCII (an IDN domain as punycode)."""
    local, at, _domain = value.rpartition("@")
    if at and not local.isascii() and _ATOMISH.fullmatch(local):
        raise PydanticCustomError(
            "email_smtputf8",
            "non-ASCII characters before the @ are not supported (sending to them needs SMTPUTF8)",
        )
    if not _EMAIL.fullmatch(value):
        raise PydanticCustomError(
            "email", "not a single email address: expected local@domain, with no name, spaces or commas"
        )
    try:
        checked = validate_email(
            value,
            check_deliverability=False,  # no DNS lookups while ingesting
            allow_smtputf8=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        detail = _QUOTED_PART.sub("", str(exc)).rstrip(".")
        raise PydanticCustomError(
            "email", "not a valid email address: {detail}", {"detail": detail}
        ) from None
    return str(checked.ascii_email)


Email = Annotated[
    str,
    Field(
        max_length=254,
        description="one address (RFC 5322 addr-spec), ASCII before the @; stored with an ASCII (punycode) domain",
        json_schema_extra={"pattern": EMAIL_PATTERN},
    ),
    AfterValidator(_email),
]
