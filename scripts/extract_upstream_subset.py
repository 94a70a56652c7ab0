"""Copy the Responses and Chat Completions schemas of OpenAI's specification into the tests.

The fake upstream of the tests (``tests/fake_upstream.py``) validates every
request the product sends, and every reply it sends back, against these
schemas. Run by hand when the upstream specification changes::

    python scripts/extract_upstream_subset.py path/to/openai-openapi.yaml

Writes ``tests/upstream_openapi/upstream-schemas.json``: the transitive closure
of the request, response and stream-event schemas of ``POST /responses`` and
``POST /chat/completions``, and of ``POST /embeddings``, with ``nullable: true`` spelled the JSON Schema way
and prose dropped (as ``extract_openapi_subset.py`` does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_openapi_subset import _jsonable, closure, denullable, strip_annotations

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "upstream_openapi" / "upstream-schemas.json"
ROOTS = (
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
)


def main(source: str) -> None:
    spec = yaml.load(Path(source).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = spec["components"]["schemas"]
    names = closure(schemas, ROOTS)
    subset = {
        "x-source": "openai/openai-openapi main at f85dbe2 (2026-08-21), MIT, Copyright (c) OpenAI",
        "components": {"schemas": {name: schemas[name] for name in sorted(names)}},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(strip_annotations(denullable(_jsonable(subset))), sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(names)} schemas)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} path/to/openai-openapi.yaml (openai/openai-openapi)")
    main(sys.argv[1])
