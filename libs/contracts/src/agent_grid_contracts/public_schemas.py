"""JSON Schemas of every message kind, for producers in other languages.

Run as a module to (re)write them:

python -m agent_grid_contracts.public_schemas libs/contracts/schemas
"""

import json
import sys
from pathlib import Path
from typing import Any

from agent_grid_contracts.public_codec import KNOWN_BODIES
from agent_grid_contracts.public_envelope import Envelope

__all__ = ["message_schemas", "write_schemas"]


def message_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per message kind, describing the whole envelope with its body, keyed by file name."""
    schemas: dict[str, dict[str, Any]] = {}
    for kind, body_type in sorted(KNOWN_BODIES.items()):
        schema = Envelope[body_type].model_json_schema(mode="validation")  # type: ignore[valid-type]
        schema["title"] = (
            f"{body_type.__name__} (agent-grid message '{kind}', schema version {body_type.SCHEMA_VERSION})"
        )
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://agent-grid.dev/schemas/{kind}.v{body_type.SCHEMA_VERSION}.json"
        schema["properties"]["kind"] = {"const": kind, "type": "string"}
        schema["required"] = sorted({*schema.get("required", []), "kind"})
        schemas[f"{kind}.v{body_type.SCHEMA_VERSION}.schema.json"] = schema
    return schemas


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema under ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in message_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "libs/contracts/schemas")):
        print(written_path)  # noqa: T201
