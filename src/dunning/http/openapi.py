"""``/openapi.json`` and ``/docs``: the ingest API described from the models that validate events.

The request body schema is the same pydantic JSON Schema as the published
``docs/events.schema.json`` (:func:`dunning.contract.event_json_schema`), its
``$defs`` moved to ``components/schemas``: one source of truth, so the API
document can never promise another event than the one ``parse_event`` takes.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from dunning.contract import EVENT_TYPES, MAX_EVENT_BYTES, event_json_schema
from dunning.signing import DEFAULT_TOLERANCE_S, SIGNATURE_HEADER

OPENAPI_VERSION = "3.1.0"
#: The version of the public contract this document describes.
CONTRACT_VERSION = "1.2"

_DEFS = "#/$defs/"
_COMPONENTS = "#/components/schemas/"

#: The example of ``/docs`` (and of the request body): an ``invoice.paid`` of the producer guide.
EXAMPLE_EVENT: dict[str, Any] = {
    "id": "evt_in_1_paid",
    "type": "invoice.paid",
    "occurred_at": "2026-11-05T14:30:00Z",
    "data": {"invoice": {"id": "in_1", "subscription_id": "sub_1", "amount_minor": 4900, "currency": "EUR"}},
}

_SIGNATURE_DOC = (
    f"`t=<unix seconds>,v1=<hex>`: HMAC-SHA256 keyed with `DUNNING_INGEST_SECRET` over the decimal "
    f"timestamp, a dot, then the body exactly as sent; lower-case hex. `t` must be within "
    f"{DEFAULT_TOLERANCE_S} seconds of the server's clock. During a secret rotation send one `v1=` per "
    "secret; any match is enough."
)

_FIELD = {
    "type": "object",
    "required": ["path", "reason"],
    "properties": {
        "path": {
            "type": "string",
            "description": "dotted path, such as data.invoice.currency, or (envelope)",
        },
        "reason": {"type": "string", "description": "why; never repeats the value sent"},
    },
}

_EXTRA_SCHEMAS: dict[str, Any] = {
    "InvalidField": _FIELD,
    "Refusal": {
        "type": "object",
        "required": ["error", "field", "reason", "fields"],
        "properties": {
            "error": {"type": "string", "const": "invalid event"},
            "field": {
                "type": "string",
                "description": "the first invalid field (v1), the same as fields[0].path",
            },
            "reason": {"type": "string", "description": "why the first field is invalid (v1)"},
            "fields": {
                "type": "array",
                "minItems": 1,
                "description": "every invalid field found (v1.2)",
                "items": {"$ref": _COMPONENTS + "InvalidField"},
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "string", "description": "the event id, queued for the workers"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "reason": {"type": "string"},
            "retry": {"type": "boolean", "description": "true when the same request may succeed later"},
        },
    },
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _COMPONENTS + schema_name}}},
    }


#: Every answer of ``POST /events``: status, schema, when.
RESPONSES: dict[str, tuple[str, str]] = {
    "202": ("Accepted", "valid, and queued for the workers (not yet applied)"),
    "400": ("Refusal", "the body is not JSON at all (bad syntax, not UTF-8)"),
    "401": (
        "Error",
        "ingest disabled (DUNNING_INGEST_SECRET not set), or a missing, malformed, non-matching or stale "
        "signature",
    ),
    "413": ("Refusal", f"body over {MAX_EVENT_BYTES} bytes (checked first, before the signature)"),
    "415": ("Error", "a Content-Type that is not application/json (or application/*+json); none is fine"),
    "422": (
        "Refusal",
        "JSON that is not a valid event: every invalid field is listed, with the first one also named alone",
    ),
    "503": ("Error", "the broker is unreachable: retry later with the same event id"),
}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                _COMPONENTS + v[len(_DEFS) :]
                if k == "$ref" and isinstance(v, str) and v.startswith(_DEFS)
                else _rewrite_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _mapping(node: dict[str, Any]) -> dict[str, Any]:
    mapping = node.get("discriminator", {}).get("mapping", {})
    node["discriminator"]["mapping"] = {k: _COMPONENTS + v[len(_DEFS) :] for k, v in mapping.items()}
    return node


@cache
def _document() -> str:
    schema = copy.deepcopy(event_json_schema())
    defs = schema.pop("$defs")
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    event = _mapping(_rewrite_refs(schema))
    event["description"] = "One billing event: the envelope, its data depending on `type`."
    components = {name: _rewrite_refs(value) for name, value in defs.items()}
    components["Event"] = event
    components.update(_EXTRA_SCHEMAS)
    doc = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Dunning ingest API",
            "version": CONTRACT_VERSION,
            "description": (
                "Billing events for the dunning and renewal workers (docs/producers.md). The request body "
                "is the schema published as docs/events.schema.json."
            ),
        },
        "paths": {
            "/events": {
                "post": {
                    "operationId": "postEvent",
                    "summary": "Send one billing event",
                    "description": (
                        f"Event types: {', '.join(EVENT_TYPES)}. Checked in this order: size (413), signature "
                        "(401), content type (415), JSON (400), the event (422). A repeated event id is "
                        "accepted and skipped by the workers, so retry with the same id."
                    ),
                    "parameters": [
                        {
                            "name": SIGNATURE_HEADER,
                            "in": "header",
                            "required": True,
                            "description": _SIGNATURE_DOC,
                            "schema": {"type": "string", "pattern": "^t=[0-9]+(,[A-Za-z0-9]+=[^,]+)+$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": _COMPONENTS + "Event"},
                                "example": EXAMPLE_EVENT,
                            }
                        },
                    },
                    "responses": {status: _json(name, text) for status, (name, text) in RESPONSES.items()},
                    "security": [{"DunningSignature": []}],
                }
            }
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "DunningSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": _SIGNATURE_DOC,
                }
            },
        },
    }
    return json.dumps(doc, sort_keys=True)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ingest API (a fresh copy)."""
    return json.loads(_document())


def openapi_text() -> str:
    """The document as served at ``/openapi.json``."""
    return _document()
