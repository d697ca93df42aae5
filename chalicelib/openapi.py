"""The OpenAPI 3 document of the API (served at GET /openapi.json, written to docs/openapi.yaml).

The document is built from the resources' declarations (chalicelib.resources) and the constants
the validators use (chalicelib.models, ids, identity, config), so that a changed rule changes the
document; tests/unit/test_openapi.py checks that
docs/openapi.yaml is this document, that every route of app.py is in it and every operation in
it is a route, and that each limit written here is the one the validators enforce.

Import-light on purpose: json and plain dicts only (the route serves it on a cold start).
`python -m chalicelib.openapi` prints it as JSON; `--yaml` (a development tool, needs PyYAML)
prints docs/openapi.yaml.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any

from chalicelib import http, models
from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from chalicelib.identity import ADMIN_GROUP, MAX_SUB_CHARS
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION
from chalicelib.resources import PROFILES, TODOS, Resource, Rule

Schema = dict[str, Any]

# The resources' limits come from their declarations (chalicelib.resources, which the validators
# read too); the request's others from chalicelib.http. Each is checked against the validator's
# behaviour at the boundary by tests/unit/test_openapi.py.
TITLE_MAX = models.TITLE_MAX
NOTES_MAX = models.NOTES_MAX
TAGS_MAX = models.TAGS_MAX
DISPLAY_NAME_MAX = models.DISPLAY_NAME.max_length
LOCALE_MAX = models.LOCALE.max_length
TIMEZONE_MAX = models.TIMEZONE.max_length
BATCH_MAX = models.BATCH_MAX
LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = http.LIMIT_MIN, http.LIMIT_MAX, http.LIMIT_DEFAULT
CURSOR_MAX = http.CURSOR_MAX
IDEMPOTENCY_KEY_MAX = http.IDEMPOTENCY_KEY_MAX
# Printable ASCII; HTTP drops a header value's outer spaces, so the key cannot start or end with one.
PRINTABLE_ASCII = r"^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$"
# RFC 3339 with an offset, as chalicelib.ids.parse_rfc3339 takes it: years 0001 to 9999, no leap
# second, at most 9 fractional digits (format date-time checks the calendar).
DUE_AT_PATTERN = (
    r"^(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-[0-9]{2}-[0-9]{2}[Tt]"
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)

ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("invalid_json", "validation_error", "invalid_id", "invalid_query"),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    500: ("internal_error",),
    503: ("unavailable",),
}

JSON = "application/json"
SECURITY_SCHEME = "cognitoUserPool"


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


UUID_SCHEMA: Schema = {"type": "string", "format": "uuid", "pattern": _anchored(CANONICAL_UUID.pattern)}
VERSION_SCHEMA: Schema = {
    "type": "integer",
    "format": "int64",
    "minimum": 1,
    "maximum": MAX_VERSION,
    "description": "Microseconds since the epoch at acceptance; below 2^53 (safe in JavaScript).",
}
TIMESTAMP_SCHEMA: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}


def _field_schema(rule: Rule, default: Any, has_default: bool) -> Schema:
    """A written field's schema, from its declaration."""
    schema: Schema
    if rule.kind == "list":
        schema = {"type": "array", "maxItems": rule.max_items}
        if rule.unique:
            schema["uniqueItems"] = True
        schema["items"] = {"type": "string", "pattern": _anchored(rule.pattern or "")}
    elif rule.kind == "choice":
        schema = {"type": "string", "enum": list(rule.choices)}
    elif rule.kind == "datetime":
        schema = {"type": "string", "format": "date-time", "pattern": DUE_AT_PATTERN}
    else:
        schema = {"type": "string"}
        if rule.min_length:
            schema["minLength"] = rule.min_length
        schema["maxLength"] = rule.max_length
        if rule.pattern:
            schema["pattern"] = _anchored(rule.pattern)
    if rule.nullable:
        schema["nullable"] = True
    if has_default:
        schema["default"] = default
    if rule.description:
        schema["description"] = rule.description
    return schema


def _written_fields(resource: Resource) -> dict[str, Schema]:
    defaults = resource.defaults()
    return {name: _field_schema(rule, defaults.get(name), name in defaults) for name, rule in resource.rules().items()}


def _todo_fields() -> dict[str, Schema]:
    return _written_fields(TODOS)


def _profile_fields() -> dict[str, Schema]:
    return _written_fields(PROFILES)


def _read_only(fields: dict[str, Schema]) -> dict[str, Schema]:
    """A field as read: what was written, without the write-side default."""
    return {name: {k: v for k, v in schema.items() if k != "default"} for name, schema in fields.items()}


def _schemas() -> dict[str, Schema]:
    todo = _todo_fields()
    profile = _profile_fields()
    stamps = {"version": VERSION_SCHEMA, "created_at": TIMESTAMP_SCHEMA, "updated_at": TIMESTAMP_SCHEMA}
    todo_read = {"id": UUID_SCHEMA, **_read_only(todo), **stamps}
    profile_read = {**_read_only(profile), **stamps}
    return {
        "TodoInput": {
            "type": "object",
            "description": "A todo as written (POST and PUT). Unknown fields are a validation error.",
            "required": ["title"],
            "additionalProperties": False,
            "properties": todo,
        },
        "Todo": {
            "type": "object",
            "description": "A todo as read.",
            "required": list(todo_read),
            "additionalProperties": False,
            "properties": todo_read,
        },
        "TodoPage": {
            "type": "object",
            "required": ["todos", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "todos": {"type": "array", "maxItems": LIMIT_MAX, "items": _ref("Todo")},
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "maxLength": CURSOR_MAX,
                    "description": "Opaque; give it as `cursor` for the next page. Null on the last page.",
                },
            },
        },
        "TodoBatchInput": {
            "type": "object",
            "required": ["todos"],
            "additionalProperties": False,
            "properties": {
                "todos": {"type": "array", "minItems": 1, "maxItems": BATCH_MAX, "items": _ref("TodoInput")},
            },
        },
        "ProfileInput": {
            "type": "object",
            "description": "A profile as written (PUT /me). Unknown fields are a validation error.",
            "required": ["display_name"],
            "additionalProperties": False,
            "properties": profile,
        },
        "Profile": {
            "type": "object",
            "description": "A profile as read.",
            "required": list(profile_read),
            "additionalProperties": False,
            "properties": profile_read,
        },
        "AcceptedTodo": {
            "type": "object",
            "required": ["id", "version", "status"],
            "additionalProperties": False,
            "properties": {
                "id": UUID_SCHEMA,
                "version": VERSION_SCHEMA,
                "status": {"type": "string", "enum": ["accepted"]},
            },
        },
        "AcceptedProfile": {
            "type": "object",
            "required": ["id", "version", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_SUB_CHARS,
                    "description": "The caller's sub.",
                },
                "version": VERSION_SCHEMA,
                "status": {"type": "string", "enum": ["accepted"]},
            },
        },
        "AcceptedItem": {
            "type": "object",
            "required": ["id", "version"],
            "additionalProperties": False,
            "properties": {"id": UUID_SCHEMA, "version": VERSION_SCHEMA},
        },
        "BatchAccepted": {
            "type": "object",
            "required": ["accepted"],
            "additionalProperties": False,
            "properties": {
                "accepted": {"type": "array", "minItems": 1, "maxItems": BATCH_MAX, "items": _ref("AcceptedItem")}
            },
        },
        "Error": {
            "type": "object",
            "description": "Every error, including those the gateway and framework answer on the app's behalf.",
            "required": ["error", "message"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "enum": sorted({c for codes in ERROR_CODES.values() for c in codes})},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "validation_error only: messages per field path (`title`, `todos.1.title`).",
                    "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"}},
        },
    }


def _header(description: str, schema: Schema, required: bool = True) -> Schema:
    return {"description": description, "required": required, "schema": schema}


HEADERS: dict[str, Schema] = {
    "CacheControlRead": _header(
        "private, with a max-age from CACHE_MAX_AGE (default 0).",
        {"type": "string", "pattern": r"^private, max-age=[0-9]+$"},
    ),
    "CacheControlNoStore": _header("Write answers are not cached.", {"type": "string", "enum": ["no-store"]}),
    "ETag": _header("The version read, quoted.", {"type": "string", "pattern": r'^"[0-9]+"$'}),
    "Location": _header("The resource the write names.", {"type": "string", "pattern": r"^/(me|todos/[0-9a-f-]{36})$"}),
    "RetryAfter": _header("Seconds to wait before retrying.", {"type": "string", "pattern": r"^[0-9]+$"}),
}


def _header_ref(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def _json(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def _error(status: int, description: str, codes: tuple[str, ...] | None = None) -> Schema:
    codes = codes or ERROR_CODES[status]
    schema: Schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    answer: Schema = {"description": description, "content": _json(schema)}
    if status == 503:
        answer["headers"] = {"Retry-After": _header_ref("RetryAfter")}
    return answer


MAX_BODY_TEXT = f"over MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES} bytes)"


def _common_errors(read: bool, body: bool, codes_400: tuple[str, ...]) -> dict[str, Schema]:
    """The errors every authorised operation can answer, in the contract's check order."""
    answers: dict[str, Schema] = {}
    if codes_400:
        answers["400"] = _error(400, "The request is not valid: " + ", ".join(codes_400) + ".", codes_400)
    answers["401"] = _error(401, "No valid identity token (no `sub` claim).")
    if body:
        answers["413"] = _error(413, f"The body is {MAX_BODY_TEXT}; checked before its media type.")
    answers["500"] = _error(500, "An unexpected failure; never carries a stack trace, SQL or internal name.")
    if read:
        answers["503"] = _error(503, "No database (master or replica) could be reached.")
    else:
        answers["503"] = _error(
            503,
            "The write transport did not confirm the write: it may still land whole (a timeout can hide an "
            "acceptance), never in part. Retry it (a POST with the same Idempotency-Key).",
        )
    return answers


def _accepted(schema: str, location: bool = True) -> Schema:
    headers: Schema = {"Cache-Control": _header_ref("CacheControlNoStore")}
    if location:
        headers["Location"] = _header_ref("Location")
    return {
        "description": (
            "Durably accepted by the write transport. Its writer's reads show it at once (with CACHE_URL set); "
            "other users' reads once it is loaded (eventually consistent)."
        ),
        "headers": headers,
        "content": _json(_ref(schema)),
    }


def _ok(schema: Schema, etag: bool = False) -> Schema:
    headers: Schema = {"Cache-Control": _header_ref("CacheControlRead")}
    if etag:
        headers["ETag"] = _header_ref("ETag")
    return {"description": "OK", "headers": headers, "content": _json(schema)}


def _body(schema: str, description: str) -> Schema:
    return {
        "required": True,
        "description": (
            f"{description} `Content-Type: application/json` (charset utf-8 allowed); "
            f"at most MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES} bytes)."
        ),
        "content": _json(_ref(schema)),
    }


def _secured(operation: Schema) -> Schema:
    return {**operation, "security": [{SECURITY_SCHEME: []}]}


PARAMETERS: dict[str, Schema] = {
    "TodoId": {"name": "todo_id", "in": "path", "required": True, "schema": UUID_SCHEMA},
    "Sub": {
        "name": "sub",
        "in": "path",
        "required": True,
        "description": "The owner's Cognito `sub`.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SUB_CHARS},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": LIMIT_MIN, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT},
    },
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `next_cursor` of the previous page.",
        "schema": {"type": "string", "maxLength": CURSOR_MAX},
    },
    "State": {
        "name": "state",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(models.STATES)},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key names the same todo(s): a retried POST is accepted again as a new version.",
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": PRINTABLE_ASCII},
    },
    "MinVersion": {
        "name": "min_version",
        "in": "query",
        "required": False,
        "description": (
            "A `version` this API gave (the caller's last 202): the answer shows that version or newer, "
            "404 for a todo deleted at it or later, or 503 with Retry-After while nothing can show it yet, "
            "never an older state. At most 5 s ahead of the service's clock, otherwise 400 invalid_query."
        ),
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
    },
    "MinVersionChecked": {
        "name": "min_version",
        "in": "query",
        "required": False,
        "description": "Checked like GET /todos/{todo_id}'s (400 invalid_query), otherwise ignored.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
    },
    "MinVersionWrite": {
        "name": "min_version",
        "in": "query",
        "required": False,
        "description": (
            "The `version` the client last got: this write's version is greater, so one client's successive "
            "writes keep their order whichever process takes them. At most 5 s ahead of the service's clock, "
            "otherwise 400 invalid_query."
        ),
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
    },
    "IfNoneMatch": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An ETag (or *); a match answers 304.",
        "schema": {"type": "string"},
    },
}


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


PAGE_PARAMS = [_param("Limit"), _param("Cursor"), _param("State")]


def _paths() -> dict[str, Schema]:
    body_400 = ("invalid_query", "invalid_json", "validation_error")
    id_body_400 = ("invalid_id", "invalid_query", "invalid_json", "validation_error")
    unreadable_yet = _error(
        503, "No database (master or replica) could be reached, or nothing can show min_version yet."
    )
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness; no authorizer.",
                "security": [],
                "responses": {"200": _ok(_ref("Health"))},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document; no authorizer.",
                "security": [],
                "responses": {"200": _ok(_ref("OpenApiDocument"))},
            }
        },
        "/todos": {
            "post": _secured(
                {
                    "operationId": "createTodo",
                    "summary": "Create a todo (a new UUIDv7, or the id derived from Idempotency-Key).",
                    "parameters": [_param("IdempotencyKey"), _param("MinVersionWrite")],
                    "requestBody": _body("TodoInput", "A todo."),
                    "responses": {
                        "202": _accepted("AcceptedTodo"),
                        **_common_errors(read=False, body=True, codes_400=body_400),
                        "415": _error(415, "The body is not sent as application/json."),
                    },
                }
            ),
            "get": _secured(
                {
                    "operationId": "listTodos",
                    "summary": "The caller's todos in ascending id order. Unknown query parameters are ignored.",
                    "parameters": [*PAGE_PARAMS, _param("MinVersionChecked")],
                    "responses": {
                        "200": _ok(_ref("TodoPage")),
                        **_common_errors(read=True, body=False, codes_400=("invalid_query",)),
                    },
                }
            ),
        },
        "/todos/batch": {
            "post": _secured(
                {
                    "operationId": "createTodos",
                    "summary": f"Create 1 to {BATCH_MAX} todos, validated as a whole; no Location.",
                    "parameters": [_param("IdempotencyKey"), _param("MinVersionWrite")],
                    "requestBody": _body("TodoBatchInput", "Todos; errors are keyed by position (todos.1.title)."),
                    "responses": {
                        "202": _accepted("BatchAccepted", location=False),
                        **_common_errors(read=False, body=True, codes_400=body_400),
                        "415": _error(415, "The body is not sent as application/json."),
                        "413": _error(
                            413,
                            f"The body is {MAX_BODY_TEXT}, checked before its media type; or, with that limit "
                            "raised, the batch's commands exceed the 1,000 KiB of the one record it travels as.",
                        ),
                        "503": _error(
                            503,
                            "The write transport did not confirm the batch: all or none of it may land (one record, "
                            "one transaction), never part; no list of todos. Retry with the same Idempotency-Key.",
                        ),
                    },
                }
            )
        },
        "/todos/{todo_id}": {
            "parameters": [_param("TodoId")],
            "get": _secured(
                {
                    "operationId": "getTodo",
                    "summary": "One of the caller's todos; another user's todo is 404, never 403.",
                    "parameters": [_param("IfNoneMatch"), _param("MinVersion")],
                    "responses": {
                        "200": _ok(_ref("Todo"), etag=True),
                        "304": {
                            "description": "If-None-Match matched the ETag.",
                            "headers": {"Cache-Control": _header_ref("CacheControlRead"), "ETag": _header_ref("ETag")},
                        },
                        **_common_errors(read=True, body=False, codes_400=("invalid_id", "invalid_query")),
                        "404": _error(404, "The caller has no such todo (or it was deleted at min_version or later)."),
                        "503": unreadable_yet,
                    },
                }
            ),
            "put": _secured(
                {
                    "operationId": "putTodo",
                    "summary": "Replace (or create) the caller's todo of this id; never touches another user's.",
                    "parameters": [_param("MinVersionWrite")],
                    "requestBody": _body("TodoInput", "The whole todo."),
                    "responses": {
                        "202": _accepted("AcceptedTodo"),
                        **_common_errors(read=False, body=True, codes_400=id_body_400),
                        "415": _error(415, "The body is not sent as application/json."),
                    },
                }
            ),
            "delete": _secured(
                {
                    "operationId": "deleteTodo",
                    "summary": "Delete the caller's todo of this id (a tombstone); the content type is ignored.",
                    "parameters": [_param("MinVersionWrite")],
                    "responses": {
                        "202": _accepted("AcceptedTodo"),
                        **_common_errors(read=False, body=True, codes_400=("invalid_id", "invalid_query")),
                    },
                }
            ),
        },
        "/me": {
            "get": _secured(
                {
                    "operationId": "getProfile",
                    "summary": "The caller's profile; 404 until the first PUT /me.",
                    "parameters": [_param("MinVersion")],
                    "responses": {
                        "200": _ok(_ref("Profile"), etag=True),
                        **_common_errors(read=True, body=False, codes_400=("invalid_query",)),
                        "404": _error(404, "No profile yet."),
                        "503": unreadable_yet,
                    },
                }
            ),
            "put": _secured(
                {
                    "operationId": "putProfile",
                    "summary": "Replace the caller's profile.",
                    "parameters": [_param("MinVersionWrite")],
                    "requestBody": _body("ProfileInput", "The whole profile."),
                    "responses": {
                        "202": _accepted("AcceptedProfile"),
                        **_common_errors(read=False, body=True, codes_400=body_400),
                        "415": _error(415, "The body is not sent as application/json."),
                    },
                }
            ),
        },
        "/users/{sub}/todos": {
            "parameters": [_param("Sub")],
            "get": _secured(
                {
                    "operationId": "adminListTodos",
                    "summary": f"Any user's todos, read-only, for members of the Cognito group `{ADMIN_GROUP}`.",
                    "parameters": PAGE_PARAMS,
                    "responses": {
                        "200": _ok(_ref("TodoPage")),
                        **_common_errors(read=True, body=False, codes_400=("invalid_id", "invalid_query")),
                        "403": _error(403, f"The caller is not in the group `{ADMIN_GROUP}`."),
                    },
                }
            ),
        },
    }


def _sorted_responses(paths: dict[str, Schema]) -> dict[str, Schema]:
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"] = dict(sorted(operation["responses"].items()))
    return paths


@lru_cache(maxsize=1)
def _document_text() -> str:
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice",
            "version": "1.0.0",
            "description": (
                "Todos and profiles. Reads come from MySQL replicas (eventually consistent); writes become "
                "commands on Kinesis Data Firehose and answer 202. Every error body is "
                '{"error": CODE, "message": TEXT} (validation errors add "fields"). Checks run in this order: '
                "401, invalid_id, 413, 415, invalid_json, validation_error. POST and PUT need "
                "Content-Type: application/json; GET and DELETE ignore the Content-Type."
            ),
        },
        "security": [{SECURITY_SCHEME: []}],
        "paths": _sorted_responses(_paths()),
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "A Cognito User Pool ID token (API Gateway's Cognito authorizer).",
                    "x-amazon-apigateway-authtype": "cognito_user_pools",
                }
            },
            "schemas": _schemas(),
            "parameters": PARAMETERS,
            "headers": HEADERS,
        },
    }
    return json.dumps(doc, separators=(",", ":"))


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
    if "--yaml" in argv:
        sys.stdout.write(to_yaml(doc))
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
