"""The OpenAPI 3 document of the API (served at GET /openapi.json, written to docs/openapi.yaml).

The document is built from the resources' declarations (chalicelib.resources): each resource's
schemas and parameters (chalicelib.openapi_schemas), and its operations, the same routes
`chalicelib.routes` derives for `app.py` (a collection: POST and GET on its path, GET, PUT and
DELETE on an item, and its batch and admin routes where declared; one row per owner: GET and
PUT). A changed rule changes the document; tests/unit/test_openapi.py checks that
docs/openapi.yaml is this document, that every route of app.py is in it and every operation in it
is a route, and that each limit it states is the one the validators enforce.

Import-light on purpose: json and plain dicts only (the route serves it on a cold start).
`python -m chalicelib.openapi` prints it as JSON; `--yaml` (a development tool, needs PyYAML)
prints docs/openapi.yaml.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any

from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from chalicelib.identity import ADMIN_GROUP
from chalicelib.openapi_schemas import (
    as_json,
    camel,
    common_schemas,
    filter_name,
    headers,
    name_of,
    parameters,
    ref,
    resource_parameters,
    resource_schemas,
    responses,
)
from chalicelib.resources import RESOURCES, Resource, on_change

Schema = dict[str, Any]
SECURITY_SCHEME = "cognitoUserPool"
ERRORS = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "500": "InternalError",
}


def _errors(*statuses: str, write: bool = False) -> dict[str, Schema]:
    """The shared answers of these statuses, and 401, 500 and 503 that every secured one has."""
    out = {status: ref(ERRORS[status], "responses") for status in ("401", "500", *statuses)}
    out["503"] = ref("WriteUnavailable" if write else "ReadUnavailable", "responses")
    return out


def _accepted(schema: str, location: bool = True) -> Schema:
    answer_headers: Schema = {"Cache-Control": ref("CacheControlNoStore", "headers")}
    if location:
        answer_headers["Location"] = ref("Location", "headers")
    return {
        "description": (
            "Durably accepted by the write transport. Its writer's reads show it at once (with CACHE_URL set); "
            "other users' reads once it is loaded (eventually consistent)."
        ),
        "headers": answer_headers,
        "content": as_json(ref(schema)),
    }


def _ok(schema: Schema, etag: bool = False) -> Schema:
    answer_headers: Schema = {"Cache-Control": ref("CacheControlRead", "headers")}
    if etag:
        answer_headers["ETag"] = ref("ETag", "headers")
    return {"description": "OK", "headers": answer_headers, "content": as_json(schema)}


NOT_MODIFIED = {
    "description": "If-None-Match matched the ETag.",
    "headers": {"Cache-Control": ref("CacheControlRead", "headers"), "ETag": ref("ETag", "headers")},
}


def _body(schema: str, description: str) -> Schema:
    return {
        "required": True,
        "description": (
            f"{description} `Content-Type: application/json` (charset utf-8 allowed); "
            f"at most MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES} bytes)."
        ),
        "content": as_json(ref(schema)),
    }


def _param(name: str) -> Schema:
    return ref(name, "parameters")


def _op(operation_id: str, summary: str, parameters: list[str], answers: dict[str, Schema], **more: Any) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary}
    if parameters:
        operation["parameters"] = [_param(p) for p in parameters]
    operation.update(more)
    return {**operation, "responses": dict(sorted(answers.items())), "security": [{SECURITY_SCHEME: []}]}


def _collection_paths(resource: Resource) -> dict[str, Schema]:
    """The operations of a resource keyed by (owner, id), from its declaration."""
    collection = resource.collection
    assert collection is not None
    path = resource.path
    paths: dict[str, Schema] = {
        path: _collection_operations(resource),
        f"{path}/{{{resource.singular}_id}}": _item_operations(resource),
    }
    if collection.batch:
        paths[f"{path}/batch"] = _batch_operations(resource, collection.batch)
    if collection.admin:
        paths[f"/users/{{sub}}{path}"] = _admin_operations(resource)
    return paths


def _page_parameters(resource: Resource) -> list[str]:
    """A page's query parameters: its limit, the cursor and the declared filters."""
    assert resource.collection is not None
    filters = (filter_name(resource, f) for f in resource.collection.filters)
    return [f"{name_of(resource)}Limit", "Cursor", *filters]


def _collection_operations(resource: Resource) -> Schema:
    """POST (create) and GET (the caller's page) on the collection's path."""
    name, noun, plural = name_of(resource), resource.singular, resource.name
    return {
        "post": _op(
            f"create{camel(noun)}",
            f"Create a {noun} (a new UUIDv7, or the id derived from Idempotency-Key).",
            ["IdempotencyKey", "MinVersionWrite"],
            {"202": _accepted("Accepted"), **_errors("400", "413", "415", write=True)},
            requestBody=_body(f"{name}Input", f"A {noun}."),
        ),
        "get": _op(
            f"list{camel(plural)}",
            f"The caller's {plural} in ascending id order. Unknown query parameters are ignored.",
            [*_page_parameters(resource), "MinVersionChecked"],
            {"200": _ok(ref(f"{name}Page")), **_errors("400")},
        ),
    }


def _item_operations(resource: Resource) -> Schema:
    """GET, PUT and DELETE on one item of the collection."""
    name, noun, plural = name_of(resource), resource.singular, resource.name
    one = camel(noun)
    return {
        "parameters": [_param(f"{name}Id")],
        "get": _op(
            f"get{one}",
            f"One of the caller's {plural}; another user's is 404, never 403.",
            ["IfNoneMatch", "MinVersion"],
            {"200": _ok(ref(name), etag=True), "304": NOT_MODIFIED, **_errors("400", "404")},
        ),
        "put": _op(
            f"put{one}",
            f"Replace (or create) the caller's {noun} of this id; never touches another user's.",
            ["MinVersionWrite"],
            {"202": _accepted("Accepted"), **_errors("400", "413", "415", write=True)},
            requestBody=_body(f"{name}Input", f"The whole {noun}."),
        ),
        "delete": _op(
            f"delete{one}",
            f"Delete the caller's {noun} of this id (a tombstone); the content type is ignored.",
            ["MinVersionWrite"],
            {"202": _accepted("Accepted"), **_errors("400", "413", write=True)},
        ),
    }


def _batch_operations(resource: Resource, most: int) -> Schema:
    """POST on `{path}/batch`: 1 to `most` items, validated as a whole."""
    name, plural = name_of(resource), resource.name
    return {
        "post": _op(
            f"create{camel(plural)}",
            f"Create 1 to {most} {plural}, validated as a whole; no Location.",
            ["IdempotencyKey", "MinVersionWrite"],
            {"202": _accepted("BatchAccepted", location=False), **_errors("400", "413", "415", write=True)},
            requestBody=_body(f"{name}BatchInput", f"{camel(plural)}; errors are keyed by position."),
        )
    }


def _admin_operations(resource: Resource) -> Schema:
    """GET on `/users/{sub}{path}`: any user's page, for the admin group."""
    name, plural = name_of(resource), resource.name
    return {
        "parameters": [_param("Sub")],
        "get": _op(
            f"adminList{camel(plural)}",
            f"Any user's {plural}, read-only, for members of the Cognito group `{ADMIN_GROUP}`.",
            _page_parameters(resource),
            {"200": _ok(ref(f"{name}Page")), **_errors("400", "403")},
        ),
    }


def _owner_paths(resource: Resource) -> dict[str, Schema]:
    """The operations of a resource with one row per owner (`GET` and `PUT` on its path)."""
    name, noun = name_of(resource), resource.singular
    return {
        resource.path: {
            "get": _op(
                f"get{camel(noun)}",
                f"The caller's {noun}; 404 until the first PUT.",
                ["MinVersion"],
                {"200": _ok(ref(name), etag=True), **_errors("400", "404")},
            ),
            "put": _op(
                f"put{camel(noun)}",
                f"Replace the caller's {noun}.",
                ["MinVersionWrite"],
                {"202": _accepted(f"Accepted{name}"), **_errors("400", "413", "415", write=True)},
                requestBody=_body(f"{name}Input", f"The whole {noun}."),
            ),
        }
    }


def _open(operation_id: str, summary: str, schema: str) -> Schema:
    return {
        "get": {"operationId": operation_id, "summary": summary, "security": [], "responses": {"200": _ok(ref(schema))}}
    }


def paths() -> dict[str, Schema]:
    out = {
        "/health": _open("health", "Liveness; no authorizer.", "Health"),
        "/openapi.json": _open("openapi", "This document; no authorizer.", "OpenApiDocument"),
    }
    for resource in RESOURCES.values():
        out.update(_collection_paths(resource) if resource.collection else _owner_paths(resource))
    return out


def _components() -> Schema:
    schemas: Schema = {}
    params = parameters()
    batch = max((r.collection.batch for r in RESOURCES.values() if r.collection), default=1)
    for resource in RESOURCES.values():
        schemas.update(resource_schemas(resource))
        params.update(resource_parameters(resource))
    locations = (
        "^/("
        + "|".join((r.path[1:] + "/[0-9a-f-]{36}") if r.collection else r.path[1:] for r in RESOURCES.values())
        + ")$"
    )
    return {
        "securitySchemes": {
            SECURITY_SCHEME: {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "A Cognito User Pool ID token (API Gateway's Cognito authorizer).",
                "x-amazon-apigateway-authtype": "cognito_user_pools",
            }
        },
        "schemas": {**schemas, **common_schemas(batch)},
        "parameters": params,
        "headers": headers(locations),
        "responses": responses(),
    }


@lru_cache(maxsize=1)
def _document_text() -> str:
    names = ", ".join(r.name for r in RESOURCES.values())
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice",
            "version": "1.0.0",
            "description": (
                f"Resources: {names}. Reads come from MySQL replicas (eventually consistent); writes become "
                "commands on Kinesis Data Firehose and answer 202. Every error body is "
                '{"error": CODE, "message": TEXT} (validation errors add "fields"). Checks run in this order: '
                "401, invalid_id, invalid_query, 413, 415, invalid_json, validation_error. POST and PUT need "
                "Content-Type: application/json; GET and DELETE ignore the Content-Type."
            ),
        },
        "security": [{SECURITY_SCHEME: []}],
        "paths": paths(),
        "components": _components(),
    }
    return json.dumps(doc, separators=(",", ":"))


on_change(lambda name: _document_text.cache_clear())


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    value: dict[str, Any] = json.loads(_document_text())
    return value


def to_yaml(doc: dict[str, Any]) -> str:
    """docs/openapi.yaml's text. A development tool: PyYAML is a dev dependency only."""
    import yaml

    header = "# Generated by scripts/gen-openapi from chalicelib/openapi.py; do not edit by hand.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str]) -> int:
    doc = document()
    sys.stdout.write(to_yaml(doc) if "--yaml" in argv else json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
