"""``/docs``: the ingest API for people, rendered from the OpenAPI document (no scripts, no CDN)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from dunning.contract import EVENT_TYPES
from dunning.http.openapi import EXAMPLE_EVENT, RESPONSES, openapi_document
from dunning.signing import SIGNATURE_HEADER

_REF = "#/components/schemas/"


@dataclass(frozen=True)
class FieldRow:
    """One field of an event type, as the page lists it."""

    path: str
    kind: str
    required: bool
    rules: str


def _resolve(node: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schemas[node["$ref"].removeprefix(_REF)]
    return node


def _kind(node: dict[str, Any]) -> str:
    if "const" in node:
        return json.dumps(node["const"])
    if node.get("enum") is not None and len(node["enum"]) <= 10:
        return " | ".join(json.dumps(v) for v in node["enum"])
    if node.get("enum") is not None:
        return f"string, one of {len(node['enum'])} codes"
    return str(node.get("format") or node.get("type", "any"))


def _rules(node: dict[str, Any]) -> str:
    parts = []
    for key, text in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("exclusiveMinimum", "over"),
        ("maximum", "max"),
        ("default", "default"),
    ):
        if key in node and node[key] is not None:
            parts.append(f"{text} {json.dumps(node[key])}")
    if len(node.get("pattern", "")) <= 40 and "pattern" in node:
        parts.append(f"pattern {node['pattern']}")
    if "description" in node:
        parts.append(str(node["description"]))
    return "; ".join(parts)


def _rows(node: dict[str, Any], schemas: dict[str, Any], prefix: str = "") -> list[FieldRow]:
    rows: list[FieldRow] = []
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
        target = _resolve(options[0], schemas)
        merged = {**target, **{k: v for k, v in prop.items() if k in ("default", "description")}}
        path = f"{prefix}{name}"
        if target.get("type") == "object" and "properties" in target:
            rows.append(FieldRow(path, "object", name in required, _rules(merged)))
            rows += _rows(target, schemas, path + ".")
        else:
            rows.append(FieldRow(path, _kind(target), name in required, _rules(merged)))
    return rows


@cache
def page_values() -> dict[str, Any]:
    """What ``api_docs.html`` shows: event types with their fields, responses, an example request."""
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    mapping = schemas["Event"]["discriminator"]["mapping"]
    events = [(kind, _rows(_resolve({"$ref": mapping[kind]}, schemas), schemas)) for kind in EVENT_TYPES]
    body = json.dumps(EXAMPLE_EVENT, separators=(",", ":"))
    curl = "\n".join(
        [
            "SECRET='the value of DUNNING_INGEST_SECRET'",
            f"BODY='{body}'",
            "T=$(date +%s)",
            'SIG=$(printf \'%s.%s\' "$T" "$BODY" | openssl dgst -sha256 -hmac "$SECRET" | sed \'s/^.*= //\')',
            "curl -sS -i -X POST http://127.0.0.1:8000/events \\",
            "  -H 'Content-Type: application/json' \\",
            f'  -H "{SIGNATURE_HEADER}: t=$T,v1=$SIG" \\',
            '  --data-binary "$BODY"',
        ]
    )
    post = doc["paths"]["/events"]["post"]
    return {
        "title": doc["info"]["title"],
        "version": doc["info"]["version"],
        "description": post["description"],
        "signature_header": SIGNATURE_HEADER,
        "signature": post["parameters"][0]["description"].replace("`", ""),
        "events": events,
        "responses": [(status, name, text) for status, (name, text) in RESPONSES.items()],
        "refusal_example": json.dumps(
            {
                "error": "invalid event",
                "field": "data.invoice.currency",
                "reason": "not an ISO-4217 currency code (upper case, such as EUR)",
                "fields": [
                    {
                        "path": "data.invoice.currency",
                        "reason": "not an ISO-4217 currency code (upper case, such as EUR)",
                    },
                    {"path": "data.invoice.amount_minor", "reason": "Input should be a valid integer"},
                ],
            },
            indent=2,
        ),
        "curl": curl,
    }
