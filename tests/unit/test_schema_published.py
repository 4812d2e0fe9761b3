"""The published event schema (docs/events.schema.json) is the contract's: it can never drift.

The samples are the JSON examples of docs/producers.md, so the guide's examples
are checked against both the product's validator and the published schema.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dunning.contract import EVENT_TYPES, event_json_schema, parse_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "events.schema.json"
GUIDE = ROOT / "docs" / "producers.md"


def _published() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _guide_samples() -> dict[str, dict[str, Any]]:
    """The complete example envelope of each event type in the producer guide."""
    samples: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"```json\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S):
        try:
            doc = json.loads(block)
        except ValueError:
            continue  # illustrative fragments ("..."), not complete events
        if isinstance(doc, dict) and doc.get("type") in EVENT_TYPES and doc.get("data"):
            assert doc["type"] not in samples, f"two complete examples of {doc['type']} in the guide"
            samples[doc["type"]] = doc
    return samples


def test_committed_schema_equals_generated() -> None:
    expected = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "docs/events.schema.json is stale: run `uv run python scripts/gen_schema.py`"
    )


def test_generator_script_writes_the_committed_text() -> None:
    spec = importlib.util.spec_from_file_location("gen_schema", ROOT / "scripts" / "gen_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SCHEMA_PATH == SCHEMA_FILE
    assert module.render() == SCHEMA_FILE.read_text(encoding="utf-8")
    assert module.main(["--check"]) == 0


def test_schema_declares_draft_and_identity() -> None:
    schema = _published()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("events-v1.json")
    assert schema["discriminator"]["propertyName"] == "type"


def test_every_event_type_is_a_const_of_the_schema() -> None:
    schema = _published()
    consts = {
        definition["properties"]["type"]["const"]
        for definition in schema["$defs"].values()
        if "const" in definition.get("properties", {}).get("type", {})
    }
    assert consts == set(EVENT_TYPES)
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES)
    refs = {branch["$ref"] for branch in schema["oneOf"]}
    for kind, ref in mapping.items():
        assert ref in refs
        name = ref.removeprefix("#/$defs/")
        assert schema["$defs"][name]["properties"]["type"]["const"] == kind
        assert set(schema["$defs"][name]["required"]) == {"id", "type", "occurred_at", "data"}


def test_guide_has_one_complete_example_per_type_and_each_is_valid() -> None:
    samples = _guide_samples()
    assert set(samples) == set(EVENT_TYPES)
    for kind, sample in samples.items():
        event = parse_event(sample)
        assert event.type == kind
        assert event.id == sample["id"]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _check_required(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str) -> None:
    """A small structural check (required keys, consts, nested objects) that needs no library."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        if value is None:
            return
        node = _resolve(schema, next(b for b in node["anyOf"] if b.get("type") != "null"))
    if "const" in node:
        assert value == node["const"], path
    if node.get("type") == "object" or "properties" in node:
        assert isinstance(value, dict), path
        for key in node.get("required", []):
            assert key in value, f"{path}.{key} is required by the schema"
        for key, sub in node.get("properties", {}).items():
            if key in value:
                _check_required(schema, sub, value[key], f"{path}.{key}")


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_guide_samples_match_the_published_schema(kind: str) -> None:
    schema = _published()
    sample = _guide_samples()[kind]
    branch = {"$ref": schema["discriminator"]["mapping"][kind]}
    _check_required(schema, branch, sample, "(envelope)")


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_guide_samples_validate_with_jsonschema(kind: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # optional: not a dependency of the project
    schema = _published()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_guide_samples()[kind])
