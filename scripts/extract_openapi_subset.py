"""Copy the Assistants part of OpenAI's OpenAPI specification into the tests.

A user's clone has no ``../shared``, so the tests read a subset committed under
``tests/openapi/``. Run this by hand when the upstream specification changes::

    python scripts/extract_openapi_subset.py path/to/openai-openapi.yaml

It keeps every path under ``/assistants``, ``/threads``, ``/files`` and ``/vector_stores`` and the transitive
closure of the component schemas they (and the stream events) reference, and
writes two files:

- ``tests/openapi/assistants-openapi.json``: paths and schemas, which the tests
  validate every response against;
- ``betaassi_django/assistants_api/schemas/requests.json``: the request-body
  schemas, which the embedded API validates every request body against.

The specification is OpenAPI 3.1 but still marks some schemas with the 3.0
keyword ``nullable: true``; JSON Schema ignores it, so both files spell it the
3.1 way (``anyOf`` with ``{"type": "null"}``). Nothing else is changed.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "openapi" / "assistants-openapi.json"
REQUESTS_OUT = ROOT / "betaassi_django" / "assistants_api" / "schemas" / "requests.json"
REQUEST_SCHEMAS = (
    "CreateAssistantRequest",
    "ModifyAssistantRequest",
    "CreateThreadRequest",
    "ModifyThreadRequest",
    "CreateMessageRequest",
    "ModifyMessageRequest",
    "CreateRunRequest",
    "CreateThreadAndRunRequest",
    "ModifyRunRequest",
    "SubmitToolOutputsRunRequest",
    "CreateFileRequest",
    "CreateVectorStoreRequest",
    "UpdateVectorStoreRequest",
    "CreateVectorStoreFileRequest",
    "UpdateVectorStoreFileAttributesRequest",
    "CreateVectorStoreFileBatchRequest",
    "VectorStoreSearchRequest",
)
ANNOTATIONS = ("description", "example", "x-oaiMeta", "title", "x-oaiTypeLabel", "x-stainless-const")
PATH_PREFIXES = ("/assistants", "/threads", "/files", "/vector_stores")
EXTRA_SCHEMAS = ("AssistantStreamEvent", "ErrorResponse", "Error")


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _jsonable(node):
    if isinstance(node, dict):
        return {str(k): _jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_jsonable(v) for v in node]
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()
    return node


def _is_nullable_marker(node) -> bool:
    return isinstance(node, dict) and node.get("nullable") is True and len(node) == 1


def denullable(node):
    """Rewrite OpenAPI 3.0 ``nullable: true`` as JSON Schema's null type."""
    if isinstance(node, list):
        return [denullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and any(_is_nullable_marker(v) for v in all_of):
        # ``allOf: [X, {nullable: true}]`` means "X or null".
        node["allOf"] = [v for v in all_of if not _is_nullable_marker(v)]
        node["nullable"] = True
    node = {k: denullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


def strip_annotations(node, key=None):
    """Drop prose from the runtime copy; keep property names that look like prose keys."""
    if isinstance(node, list):
        return [strip_annotations(v) for v in node]
    if not isinstance(node, dict):
        return node
    if key == "properties":
        return {k: strip_annotations(v) for k, v in node.items()}
    return {k: strip_annotations(v, k) for k, v in node.items() if k not in ANNOTATIONS}


def closure(schemas: dict, roots) -> set[str]:
    wanted: set[str] = set(roots)
    done: set[str] = set()
    while wanted - done:
        name = (wanted - done).pop()
        done.add(name)
        _refs(schemas[name], wanted)
    return done


def extract(spec: dict) -> dict:
    paths = {p: item for p, item in spec["paths"].items() if p.startswith(PATH_PREFIXES)}
    schemas = spec["components"]["schemas"]
    roots: set[str] = set(EXTRA_SCHEMAS)
    _refs(paths, roots)
    done = closure(schemas, roots)
    return denullable(
        _jsonable(
            {
                "openapi": spec["openapi"],
                "info": {
                    **spec["info"],
                    "x-subset-of": "openai/openai-openapi main at f85dbe2 (2026-08-21), MIT, Copyright (c) OpenAI",
                },
                "servers": spec.get("servers", []),
                "security": spec.get("security", []),
                "paths": paths,
                "components": {
                    "schemas": {name: schemas[name] for name in sorted(done)},
                    "securitySchemes": spec["components"].get("securitySchemes", {}),
                },
            }
        )
    )


def extract_requests(spec: dict) -> dict:
    schemas = spec["components"]["schemas"]
    names = closure(schemas, REQUEST_SCHEMAS)
    return strip_annotations(
        denullable(
            _jsonable(
                {
                    "x-source": "openai/openai-openapi main at f85dbe2 (2026-08-21), MIT, Copyright (c) OpenAI",
                    "components": {"schemas": {name: schemas[name] for name in sorted(names)}},
                }
            )
        )
    )


def main(source: str) -> None:
    spec = yaml.load(Path(source).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    OUT.write_text(json.dumps(extract(spec), indent=1, sort_keys=True) + "\n")
    REQUESTS_OUT.write_text(json.dumps(extract_requests(spec), indent=1, sort_keys=True) + "\n")
    for out in (OUT, REQUESTS_OUT):
        print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} path/to/openai-openapi.yaml (openai/openai-openapi)")
    main(sys.argv[1])
