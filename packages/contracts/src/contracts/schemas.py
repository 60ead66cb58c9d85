"""Writes the JSON Schema of every contract model to packages/contracts/schemas (committed; a test checks drift).

Run: python -m contracts.schemas [--check]
"""

import json
import sys
from pathlib import Path

from contracts.registry import MODELS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render() -> dict[str, str]:
    """File name -> JSON Schema text, for every model at its current version."""
    out: dict[str, str] = {}
    for event_type, model in sorted(MODELS.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["x-event-type"] = event_type
        schema["x-schema-version"] = model.schema_version
        out[f"{event_type}.v{model.schema_version}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [
            n for n, text in rendered.items() if not (SCHEMA_DIR / n).exists() or (SCHEMA_DIR / n).read_text() != text
        ]
        if stale:
            print("schemas out of date:", ", ".join(stale), "- run: python -m contracts.schemas")
            return 1
        return 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (SCHEMA_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
