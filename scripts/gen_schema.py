"""Regenerate ``docs/events.schema.json`` from :func:`dunning.contract.event_json_schema`.

    uv run python scripts/gen_schema.py          # write the file
    uv run python scripts/gen_schema.py --check  # exit 1 if the committed file is out of date

``tests/unit/test_schema_published.py`` fails whenever the committed file and
the pydantic models disagree, so run this after changing ``contract.py`` or
``contract_fields.py``, and after upgrading Babel (the currency enum is Babel's
ISO-4217 list).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dunning.contract import event_json_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "events.schema.json"


def render() -> str:
    """The published text: indent 2, sorted keys, trailing newline."""
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is out of date: run `uv run python scripts/gen_schema.py`", file=sys.stderr)
            return 1
        print(f"{SCHEMA_PATH} is up to date")
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
