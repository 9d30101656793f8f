"""Validate raw JSON against a definition in one of Microsoft's REST specs (``tests/specs``, copied unmodified).

The specs are Swagger 2.0. A definition becomes a JSON Schema by keeping the spec's own ``definitions`` beside it.
References into ``common-types`` (ARM's shared ``Resource``, ``ErrorResponse`` ...) are not in the copy, so they accept
anything; say so where a test relies on them. Swagger's extensions (``x-ms-*``, ``readOnly``, ``format``) are ignored.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).parent / "specs"
KEYVAULT = "keyvault/data-plane/Microsoft.KeyVault/stable/2025-07-01/keys.json"
COGNITIVE = "cognitiveservices/resource-manager/Microsoft.CognitiveServices/stable/2025-09-01/cognitiveservices.json"
EVENTGRID_KEYVAULT = "eventgrid/data-plane/Microsoft.KeyVault/stable/2018-01-01/KeyVault.json"
RESOURCEGRAPH = "resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/2024-04-01/resourcegraph.json"


def _local_refs_only(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#/"):
            return {}
        return {k: _local_refs_only(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_local_refs_only(v) for v in node]
    return node


@cache
def _definitions(spec: str) -> dict[str, Any]:
    document = json.loads((SPECS / spec).read_text())
    return _local_refs_only(document["definitions"])


def validate(spec: str, definition: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` if ``instance`` does not match ``definitions[definition]`` of ``spec``."""
    definitions = _definitions(spec)
    if definition not in definitions:
        raise KeyError(f"{definition!r} is not defined in {spec}")
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions}
    jsonschema.Draft4Validator(schema).validate(instance)


def example(path: str) -> Any:
    """An example file from ``tests/specs``, parsed."""
    return json.loads((SPECS / path).read_text())
