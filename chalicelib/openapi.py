"""The OpenAPI 3 document of the API (served at GET /openapi.json, written to docs/openapi.yaml)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "Sluice", "version": "1.0.0"}, "paths": {}}
