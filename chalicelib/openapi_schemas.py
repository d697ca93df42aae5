"""The OpenAPI document's components, derived from the resources' declarations
(chalicelib.resources) and the request rules' constants (chalicelib.http, ids, identity, config):
schemas, parameters, headers and the shared error responses. `chalicelib.openapi` assembles
them with the paths.

Every resource gives `{Name}Input` (as written) and `{Name}` (as read), a collection its
`{Name}Page` and `{Name}BatchInput`, where it has them; `{Name}` is its document class's name
(`Todo`, `TodoList`, `Profile`). Errors share one `Error` schema and one response per status
(`components.responses`), so a generated client has one error model, not one per operation.
"""

from __future__ import annotations

from typing import Any

from chalicelib import http
from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from chalicelib.identity import MAX_SUB_CHARS
from chalicelib.ids import CANONICAL_UUID, MAX_VERSION
from chalicelib.resources import Resource, Rule

Schema = dict[str, Any]

# Printable ASCII; HTTP drops a header value's outer spaces, so the key cannot start or end with one.
PRINTABLE_ASCII = r"^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$"
# RFC 3339 with an offset, as chalicelib.ids.parse_rfc3339 takes it: years 0001 to 9999, no leap
# second, at most 9 fractional digits (format date-time checks the calendar).
DATETIME_PATTERN = (
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
MAX_BODY_TEXT = f"over MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES} bytes)"


def anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def as_json(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


UUID_SCHEMA: Schema = {"type": "string", "format": "uuid", "pattern": anchored(CANONICAL_UUID.pattern)}
VERSION_SCHEMA: Schema = {
    "type": "integer",
    "format": "int64",
    "minimum": 1,
    "maximum": MAX_VERSION,
    "description": "Microseconds since the epoch at acceptance; below 2^53 (safe in JavaScript).",
}
TIMESTAMP_SCHEMA: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."}


def name_of(resource: Resource) -> str:
    """The resource's name in the document: its document class's (Todo, TodoList, Profile)."""
    return resource.document.__name__


def field_schema(rule: Rule, default: Any, has_default: bool) -> Schema:
    """A written field's schema, from its declaration."""
    schema: Schema
    if rule.kind == "list":
        schema = {"type": "array", "maxItems": rule.max_items}
        if rule.unique:
            schema["uniqueItems"] = True
        schema["items"] = {"type": "string", "pattern": anchored(rule.pattern or ".*")}
    elif rule.kind == "choice":
        schema = {"type": "string", "enum": list(rule.choices)}
    elif rule.kind == "integer":
        schema = {"type": "integer", "minimum": rule.minimum, "maximum": rule.maximum}
    elif rule.kind == "uuid":
        schema = dict(UUID_SCHEMA)
    elif rule.kind == "datetime":
        schema = {"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}
    else:
        schema = {"type": "string"}
        if rule.min_length:
            schema["minLength"] = rule.min_length
        schema["maxLength"] = rule.max_length
        if rule.pattern:
            schema["pattern"] = anchored(rule.pattern)
    if rule.nullable:
        schema["nullable"] = True
    if has_default:
        schema["default"] = default
    if rule.description:
        schema["description"] = rule.description
    return schema


def written_fields(resource: Resource) -> dict[str, Schema]:
    defaults = resource.defaults()
    return {name: field_schema(rule, defaults.get(name), name in defaults) for name, rule in resource.rules().items()}


def _read_only(fields: dict[str, Schema]) -> dict[str, Schema]:
    """A field as read: what was written, without the write-side default."""
    return {name: {k: v for k, v in schema.items() if k != "default"} for name, schema in fields.items()}


def _object(properties: dict[str, Schema], required: list[str], description: str | None = None) -> Schema:
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    return {**schema, "required": required, "additionalProperties": False, "properties": properties}


def resource_schemas(resource: Resource) -> dict[str, Schema]:
    """`{Name}Input`, `{Name}`, and for a collection `{Name}Page` (and `{Name}BatchInput`)."""
    name, noun = name_of(resource), resource.singular
    written = written_fields(resource)
    stamps = {"version": VERSION_SCHEMA, "created_at": TIMESTAMP_SCHEMA, "updated_at": TIMESTAMP_SCHEMA}
    read = {**({"id": UUID_SCHEMA} if resource.by_id else {}), **_read_only(written), **stamps}
    out = {
        f"{name}Input": _object(
            written,
            list(resource.required()),
            f"A {noun} as written (POST and PUT). Unknown fields are a validation error.",
        ),
        name: _object(read, list(read), f"A {noun} as read."),
    }
    collection = resource.collection
    if collection is None:
        return out
    cursor = {
        "type": "string",
        "nullable": True,
        "maxLength": http.CURSOR_MAX,
        "description": "Opaque; give it as `cursor` for the next page. Null on the last page.",
    }
    items = {"type": "array", "maxItems": collection.limit_max, "items": ref(name)}
    out[f"{name}Page"] = _object({resource.name: items, "next_cursor": cursor}, [resource.name, "next_cursor"])
    if collection.batch:
        batch = {"type": "array", "minItems": 1, "maxItems": collection.batch, "items": ref(f"{name}Input")}
        out[f"{name}BatchInput"] = _object({resource.name: batch}, [resource.name])
    return out


def common_schemas(batch_max: int) -> dict[str, Schema]:
    accepted = {"version": VERSION_SCHEMA, "status": {"type": "string", "enum": ["accepted"]}}
    sub = {"type": "string", "minLength": 1, "maxLength": MAX_SUB_CHARS, "description": "The caller's sub."}
    fields = {
        "type": "object",
        "description": "validation_error only: messages per field path (`title`, `todos.1.title`).",
        "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    }
    codes = sorted({c for group in ERROR_CODES.values() for c in group})
    error: dict[str, Schema] = {
        "error": {"type": "string", "enum": codes},
        "message": {"type": "string"},
        "fields": fields,
    }
    items = {"type": "array", "minItems": 1, "maxItems": batch_max, "items": ref("AcceptedItem")}
    document = {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"}}
    return {
        "Accepted": _object({"id": UUID_SCHEMA, **accepted}, ["id", "version", "status"]),
        "AcceptedProfile": _object({"id": sub, **accepted}, ["id", "version", "status"]),
        "AcceptedItem": _object({"id": UUID_SCHEMA, "version": VERSION_SCHEMA}, ["id", "version"]),
        "BatchAccepted": _object({"accepted": items}, ["accepted"]),
        "Error": _object(
            error,
            ["error", "message"],
            "Every error, including those the gateway and framework answer on the app's behalf.",
        ),
        "Health": _object({"status": {"type": "string", "enum": ["ok"]}}, ["status"]),
        "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"], "properties": document},
    }


def _header(description: str, schema: Schema, required: bool = True) -> Schema:
    return {"description": description, "required": required, "schema": schema}


def headers(locations: str) -> dict[str, Schema]:
    """`locations`: a pattern of the paths a write's Location may name."""
    return {
        "CacheControlRead": _header(
            "private, with a max-age from CACHE_MAX_AGE (default 0).",
            {"type": "string", "pattern": r"^private, max-age=[0-9]+$"},
        ),
        "CacheControlNoStore": _header("Write answers are not cached.", {"type": "string", "enum": ["no-store"]}),
        "ETag": _header("The version read, quoted.", {"type": "string", "pattern": r'^"[0-9]+"$'}),
        "Location": _header("The resource the write names.", {"type": "string", "pattern": locations}),
        "RetryAfter": _header("Seconds to wait before retrying.", {"type": "string", "pattern": r"^[0-9]+$"}),
    }


def _error(status: int, description: str) -> Schema:
    answer: Schema = {"description": description, "content": as_json(ref("Error"))}
    if status == 503:
        answer["headers"] = {"Retry-After": ref("RetryAfter", "headers")}
    return answer


RESPONSES: dict[str, tuple[int, str]] = {
    "BadRequest": (400, "The request is not valid: invalid_json, validation_error, invalid_id or invalid_query."),
    "Unauthorized": (401, "No valid identity token (no `sub` claim)."),
    "Forbidden": (403, "The caller is not in the group that may use this route."),
    "NotFound": (404, "The caller has no such resource (or it was deleted at min_version or later)."),
    "PayloadTooLarge": (
        413,
        f"The body is {MAX_BODY_TEXT}, checked before its media type; or a batch's commands exceed the "
        "1,000 KiB of the one record it travels as.",
    ),
    "UnsupportedMediaType": (415, "The body is not sent as application/json."),
    "InternalError": (500, "An unexpected failure; never carries a stack trace, SQL or internal name."),
    "ReadUnavailable": (
        503,
        "No database (master or replica) could be reached, or nothing can show min_version yet.",
    ),
    "WriteUnavailable": (
        503,
        "The write transport did not confirm the write: all or none of it may land (a timeout can hide an "
        "acceptance; a batch is one record, one transaction), never part. Retry it (a POST with the same "
        "Idempotency-Key).",
    ),
}


def responses() -> dict[str, Schema]:
    """The shared error answers (`components.responses`): one per status, all of shape Error."""
    return {name: _error(status, description) for name, (status, description) in RESPONSES.items()}


def _query(name: str, schema: Schema, description: str | None = None) -> Schema:
    out: Schema = {"name": name, "in": "query", "required": False}
    if description:
        out["description"] = description
    return {**out, "schema": schema}


MIN_VERSION = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}


def parameters() -> dict[str, Schema]:
    """The parameters every resource shares (its own come from `resource_parameters`)."""
    ahead = "At most 5 s ahead of the service's clock, otherwise 400 invalid_query."
    return {
        "Sub": {
            "name": "sub",
            "in": "path",
            "required": True,
            "description": "The owner's Cognito `sub`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SUB_CHARS},
        },
        "Cursor": _query("cursor", {"type": "string", "maxLength": http.CURSOR_MAX}, "The `next_cursor` of a page."),
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "The same key names the same item(s): a retried POST is accepted again as a new version.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": http.IDEMPOTENCY_KEY_MAX,
                "pattern": PRINTABLE_ASCII,
            },
        },
        "MinVersion": _query(
            "min_version",
            MIN_VERSION,
            "A `version` this API gave (the caller's last 202): the answer shows that version or newer, 404 for "
            "an item deleted at it or later, or 503 with Retry-After while nothing can show it yet, never an "
            f"older state. {ahead}",
        ),
        "MinVersionChecked": _query("min_version", MIN_VERSION, "Checked like an item read's, otherwise ignored."),
        "MinVersionWrite": _query(
            "min_version",
            MIN_VERSION,
            "The `version` the client last got: this write's version is greater, so one client's successive "
            f"writes keep their order whichever process takes them. {ahead}",
        ),
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag (or *); a match answers 304.",
            "schema": {"type": "string"},
        },
    }


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def filter_name(resource: Resource, field: str) -> str:
    return f"{name_of(resource)}By{camel(field)}"


def resource_parameters(resource: Resource) -> dict[str, Schema]:
    """A collection's own parameters: its item id, its page size and its filters."""
    collection = resource.collection
    if collection is None:
        return {}
    name, rules = name_of(resource), resource.rules()
    limit = {
        "type": "integer",
        "minimum": collection.limit_min,
        "maximum": collection.limit_max,
        "default": collection.limit_default,
    }
    out = {
        f"{name}Id": {"name": f"{resource.singular}_id", "in": "path", "required": True, "schema": UUID_SCHEMA},
        f"{name}Limit": _query("limit", limit),
    }
    for field in collection.filters:
        schema = field_schema(rules[field], None, False)
        schema.pop("nullable", None)
        schema.pop("description", None)
        out[filter_name(resource, field)] = _query(field, schema, f"Only the {resource.name} of this {field}.")
    return out
