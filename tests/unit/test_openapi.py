"""``/openapi.json`` and ``/docs`` say what ``parse_event`` does: the published JSON Schema and the
OpenAPI document name the same event types with the same fields, and every answer is described."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from dramatiq.brokers.stub import StubBroker
from starlette.testclient import TestClient

from dunning.contract import EVENT_TYPES
from dunning.http.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = json.loads((ROOT / "docs" / "events.schema.json").read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        if ref.startswith("#/$defs/"):
            node = root["$defs"][ref.removeprefix("#/$defs/")]
        else:
            node = root["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
    return node


def _shape(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Required and optional fields, recursively, with the types and constraints of each leaf."""
    node = _resolve(node, root)
    if "anyOf" in node:
        return {"anyOf": [_shape(option, root) for option in node["anyOf"]]}
    if node.get("type") == "object":
        return {
            "required": sorted(node.get("required", [])),
            "properties": {name: _shape(prop, root) for name, prop in node.get("properties", {}).items()},
        }
    return {k: v for k, v in node.items() if k not in ("title", "description")}


def _event_types(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types = {}
    for option in schema["oneOf"]:
        target = _resolve(option, root)
        types[target["properties"]["type"]["const"]] = _shape(target, root)
    return types


def test_the_published_schema_and_openapi_agree_on_event_types_and_fields() -> None:
    doc = openapi_document()
    body = doc["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    event = _resolve(body, doc)
    published = _event_types(PUBLISHED, PUBLISHED)
    served = _event_types(event, doc)
    assert sorted(published) == sorted(served) == sorted(EVENT_TYPES)
    for kind in EVENT_TYPES:
        assert served[kind] == published[kind], kind
    # A discriminated union on `type`, mapping every type to its schema.
    assert event["discriminator"]["propertyName"] == "type"
    mapping = event["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(EVENT_TYPES)
    for kind, ref in mapping.items():
        assert _resolve({"$ref": ref}, doc)["properties"]["type"]["const"] == kind
    # A change in the models that reached one but not the other would fail above; spot-check a leaf.
    sub = served["subscription.upserted"]["properties"]["data"]["properties"]["subscription"]
    assert "current_period_end" in sub["required"] and "started_at" not in sub["required"]


def test_every_answer_of_post_events_is_described_with_its_body() -> None:
    doc = openapi_document()
    post = doc["paths"]["/events"]["post"]
    assert set(post["responses"]) >= {"202", "400", "401", "413", "415", "422"}
    refusal = _resolve(post["responses"]["422"]["content"]["application/json"]["schema"], doc)
    assert refusal["required"] == ["error", "field", "reason", "fields"]
    item = _resolve(refusal["properties"]["fields"]["items"], doc)
    assert item["required"] == ["path", "reason"]
    for status in ("400", "413"):
        assert post["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Refusal"
        }
    header = post["parameters"][0]
    assert (header["name"], header["in"], header["required"]) == ("Dunning-Signature", "header", True)
    assert "HMAC-SHA256" in header["description"]
    assert doc["components"]["securitySchemes"]["DunningSignature"]["name"] == "Dunning-Signature"


def test_the_document_is_valid_openapi_json_schema_wise() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    # Every component is a valid JSON Schema (2020-12, what OpenAPI 3.1 uses), refs all resolvable.
    validator = jsonschema.Draft202012Validator
    for schema in doc["components"]["schemas"].values():
        validator.check_schema(schema)
    text = json.dumps(doc)
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    # The example validates against the served body schema (with refs resolved from the document).
    example = doc["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["example"]
    schema = {"$ref": "#/components/schemas/Event", "components": doc["components"]}
    jsonschema.validate(example, schema, cls=validator)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    from dunning.http.app import create_app
    from dunning.runtime import build_runtime
    from dunning.settings import load_settings

    rt = build_runtime(load_settings({"DUNNING_HOME": str(tmp_path), "DUNNING_INGEST_SECRET": "s"}))
    try:
        yield TestClient(create_app(rt, broker=StubBroker()))
    finally:
        rt.close()


def test_the_app_serves_the_document_and_a_page_for_people(client: TestClient) -> None:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == openapi_document()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for kind in EVENT_TYPES:
        assert f'id="{kind}"' in page.text
    for text in ("data.invoice.amount_minor", "Dunning-Signature", "curl", "415", "fields", "/openapi.json"):
        assert text in page.text, text
    # Static: nothing fetched from elsewhere (no CDN), no script at all.
    assert "<script" not in page.text and "src=" not in page.text
