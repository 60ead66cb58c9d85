"""Writes the JSON Schema of every contract model to packages/contracts/schemas and the AsyncAPI document to
packages/contracts/asyncapi.json (both committed; `--check` fails on drift, and `make lint` runs it).

Run: python -m contracts.schemas [--check]
"""

import json
import sys
from pathlib import Path

from contracts import asyncapi
from contracts.registry import MODELS

PACKAGE_DIR = Path(__file__).resolve().parents[2]
SCHEMA_DIR = PACKAGE_DIR / "schemas"
ASYNCAPI_PATH = PACKAGE_DIR / "asyncapi.json"


def render() -> dict[str, str]:
    """File name -> JSON Schema text, for every model at its current version."""
    out: dict[str, str] = {}
    for event_type, model in sorted(MODELS.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["x-event-type"] = event_type
        schema["x-schema-version"] = model.schema_version
        out[f"{event_type}.v{model.schema_version}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def generated() -> dict[Path, str]:
    """Every generated file and its text."""
    files = {SCHEMA_DIR / name: text for name, text in render().items()}
    files[ASYNCAPI_PATH] = asyncapi.render()
    return files


def main(argv: list[str]) -> int:
    files = generated()
    if "--check" in argv:
        stale = [p.relative_to(PACKAGE_DIR) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print("out of date:", ", ".join(map(str, stale)), "- run: make schemas")
            return 1
        return 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
