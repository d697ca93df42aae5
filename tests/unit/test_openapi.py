"""The OpenAPI document cannot drift: from docs/openapi.yaml, from app.py's routes, or from the rules
the validators enforce (CONTRACT section 3)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib import openapi
from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from chalicelib.errors import ApiError
from chalicelib.http import decode_cursor, parse_limit
from chalicelib.identity import MAX_SUB_CHARS
from chalicelib.ids import MAX_VERSION
from chalicelib.models import Invalid, time_zones, validate_batch, validate_profile, validate_todo

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
DOC = openapi.document()


# -- helpers: the document's schemas as plain JSON Schema ---------------------------------------
def _resolve(node: Any, doc: dict[str, Any]) -> Any:
    """Inline $refs and turn OpenAPI 3.0's `nullable` into a JSON Schema type list."""
    if isinstance(node, list):
        return [_resolve(item, doc) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _resolve(target, doc)
    out = {key: _resolve(value, doc) for key, value in node.items() if key not in ("nullable", "description")}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]  # pattern and format apply to strings only
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def json_schema(name: str) -> dict[str, Any]:
    return _resolve(DOC["components"]["schemas"][name], DOC)


def validator(name: str) -> Any:
    return jsonschema_rs.Draft4Validator(json_schema(name), validate_formats=True)


def accepts(validate: Any, body: Any) -> bool:
    try:
        validate(copy.deepcopy(body))
    except Invalid:
        return False
    return True


# -- (a) docs/openapi.yaml is the generated document ---------------------------------------------
def test_docs_yaml_is_the_generated_document() -> None:
    text = (ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text) == DOC, "docs/openapi.yaml drifted: run scripts/gen-openapi"
    assert text == openapi.to_yaml(DOC), "docs/openapi.yaml is not formatted as generated: run scripts/gen-openapi"


def test_document_is_valid_openapi_3() -> None:
    from openapi_spec_validator import validate

    validate(openapi.document())


def test_document_is_plain_json_and_a_fresh_copy_each_time() -> None:
    first = openapi.document()
    first["paths"].clear()
    assert openapi.document() == json.loads(json.dumps(DOC)) and openapi.document()["paths"]


# -- (b) the routes and the document name the same operations ---------------------------------
def _app_operations() -> dict[tuple[str, str], Any]:
    import app

    return {
        (path, method.lower()): entry for path, methods in app.app.routes.items() for method, entry in methods.items()
    }


def _doc_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in DOC["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_every_route_is_documented_and_every_operation_is_a_route() -> None:
    assert set(_app_operations()) == set(_doc_operations())


def test_security_is_documented_exactly_where_the_authorizer_is() -> None:
    routes = _app_operations()
    for key, operation in _doc_operations().items():
        secured = operation.get("security", DOC["security"]) != []
        assert secured == (routes[key].authorizer is not None), key
    assert {k for k, op in _doc_operations().items() if op.get("security") == []} == {
        ("/health", "get"),
        ("/openapi.json", "get"),
    }
    scheme = DOC["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")


def test_path_parameters_match_the_route_variables() -> None:
    routes = _app_operations()
    for (path, method), operation in _doc_operations().items():
        declared = DOC["paths"][path].get("parameters", []) + operation.get("parameters", [])
        names = {_resolve(p, DOC)["name"] for p in declared if _resolve(p, DOC)["in"] == "path"}
        assert names == set(routes[(path, method)].view_args), (path, method)


def test_every_secured_operation_documents_401_500_and_503_and_error_bodies_share_one_shape() -> None:
    for key, operation in _doc_operations().items():
        responses = operation["responses"]
        if operation.get("security") != []:
            assert {"401", "500", "503"} <= set(responses), key
        for status, answer in responses.items():
            if int(status) >= 400:
                schema = json.dumps(answer["content"]["application/json"]["schema"])
                assert "#/components/schemas/Error" in schema, (key, status)
                if status == "503":
                    assert "Retry-After" in answer["headers"], key


def test_writes_document_413_and_415_where_the_code_checks_them() -> None:
    ops = _doc_operations()
    for key in [("/todos", "post"), ("/todos/batch", "post"), ("/todos/{todo_id}", "put"), ("/me", "put")]:
        assert {"202", "413", "415"} <= set(ops[key]["responses"]), key
        assert ops[key]["requestBody"]["required"] is True
    delete = ops[("/todos/{todo_id}", "delete")]["responses"]
    assert "413" in delete and "415" not in delete, "DELETE ignores the content type"


# -- (c) the limits in the document are the ones the validators enforce -------------------------
def test_constants_imported_from_the_code() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["Todo"]["properties"]["version"]["maximum"] == MAX_VERSION == 2**53 - 1
    assert DOC["components"]["parameters"]["Sub"]["schema"]["maxLength"] == MAX_SUB_CHARS
    assert str(DEFAULT_MAX_BODY_BYTES) in json.dumps(DOC["paths"]["/todos"]["post"]["requestBody"])
    assert set(schemas["TodoInput"]["properties"]) == set(schemas["Todo"]["properties"]) - {
        "id",
        "version",
        "created_at",
        "updated_at",
    }


@pytest.mark.parametrize(
    ("field", "limit"),
    [("title", openapi.TITLE_MAX), ("notes", openapi.NOTES_MAX)],
)
def test_todo_string_limits(field: str, limit: int) -> None:
    schema = DOC["components"]["schemas"]["TodoInput"]["properties"][field]
    assert schema["maxLength"] == limit
    assert accepts(validate_todo, {"title": "t", field: "é" * limit})
    assert not accepts(validate_todo, {"title": "t", field: "é" * (limit + 1)})
    minimum = schema.get("minLength", 0)
    assert accepts(validate_todo, {"title": "t", field: "x" * max(minimum, 1)})
    assert accepts(validate_todo, {"title": "t", field: ""}) == (minimum == 0)


def test_tag_limits() -> None:
    tags = DOC["components"]["schemas"]["TodoInput"]["properties"]["tags"]
    assert tags["maxItems"] == openapi.TAGS_MAX and tags["uniqueItems"] is True
    many = [f"t{i}" for i in range(openapi.TAGS_MAX + 1)]
    assert accepts(validate_todo, {"title": "t", "tags": many[:-1]})
    assert not accepts(validate_todo, {"title": "t", "tags": many})
    assert not accepts(validate_todo, {"title": "t", "tags": ["a", "a"]})
    assert accepts(validate_todo, {"title": "t", "tags": ["a" * 32]})
    assert not accepts(validate_todo, {"title": "t", "tags": ["a" * 33]})


def test_profile_limits() -> None:
    props = DOC["components"]["schemas"]["ProfileInput"]["properties"]
    assert props["display_name"]["maxLength"] == openapi.DISPLAY_NAME_MAX
    assert accepts(validate_profile, {"display_name": "é" * openapi.DISPLAY_NAME_MAX})
    assert not accepts(validate_profile, {"display_name": "é" * (openapi.DISPLAY_NAME_MAX + 1)})
    assert not accepts(validate_profile, {"display_name": ""})
    # a well-formed tag of exactly the limit, and one over it
    at_limit = "en-" + "-".join(["abcdefgh"] * 4)[: openapi.LOCALE_MAX - 3]
    at_limit = at_limit.rstrip("-")
    assert len(at_limit) <= openapi.LOCALE_MAX
    long_locale = "en-" + "-".join(["abcdefgh"] * 5)
    assert props["locale"]["maxLength"] == openapi.LOCALE_MAX
    with pytest.raises(Invalid) as over:
        validate_profile({"display_name": "x", "locale": long_locale})
    assert f"at most {openapi.LOCALE_MAX}" in str(over.value)
    assert props["timezone"]["maxLength"] == openapi.TIMEZONE_MAX
    with pytest.raises(Invalid) as too_long:
        validate_profile({"display_name": "x", "timezone": "A" * (openapi.TIMEZONE_MAX + 1)})
    assert f"at most {openapi.TIMEZONE_MAX}" in str(too_long.value)
    with pytest.raises(Invalid) as at_max:
        validate_profile({"display_name": "x", "timezone": "A" * openapi.TIMEZONE_MAX})
    assert "at most" not in str(at_max.value)


def test_every_known_zone_fits_the_timezone_schema() -> None:
    check = jsonschema_rs.Draft4Validator(json_schema("ProfileInput"))
    for zone in time_zones():
        assert check.is_valid({"display_name": "x", "timezone": zone}), zone
        assert accepts(validate_profile, {"display_name": "x", "timezone": zone}), zone


def test_batch_limits() -> None:
    todos = DOC["components"]["schemas"]["TodoBatchInput"]["properties"]["todos"]
    assert (todos["minItems"], todos["maxItems"]) == (1, openapi.BATCH_MAX)
    assert accepts(validate_batch, {"todos": [{"title": "t"}] * openapi.BATCH_MAX})
    assert not accepts(validate_batch, {"todos": [{"title": "t"}] * (openapi.BATCH_MAX + 1)})
    assert not accepts(validate_batch, {"todos": []})


def test_limit_query_parameter() -> None:
    schema = DOC["components"]["parameters"]["Limit"]["schema"]
    assert (schema["minimum"], schema["maximum"], schema["default"]) == (
        openapi.LIMIT_MIN,
        openapi.LIMIT_MAX,
        openapi.LIMIT_DEFAULT,
    )
    assert parse_limit(None) == openapi.LIMIT_DEFAULT
    assert parse_limit(str(openapi.LIMIT_MIN)) == openapi.LIMIT_MIN
    assert parse_limit(str(openapi.LIMIT_MAX)) == openapi.LIMIT_MAX
    for bad in (str(openapi.LIMIT_MIN - 1), str(openapi.LIMIT_MAX + 1), "-1", "1.0", "ten", ""):
        with pytest.raises(ApiError):
            parse_limit(bad)


def _cursor_of_length(length: int) -> str:
    """A cursor this API could have given (JSON padded with spaces) of exactly `length` characters."""
    for pad in range(0, length):
        raw = base64.urlsafe_b64encode(
            ('{"after": "00000000-0000-4000-8000-000000000000"' + " " * pad + "}").encode()
        ).decode()
        raw = raw.rstrip("=")
        if len(raw) == length:
            return raw
    raise AssertionError(f"no cursor of length {length}")


def test_cursor_limit() -> None:
    assert DOC["components"]["parameters"]["Cursor"]["schema"]["maxLength"] == openapi.CURSOR_MAX
    at_limit = _cursor_of_length(openapi.CURSOR_MAX)
    assert decode_cursor(at_limit) == "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ApiError):
        decode_cursor(_cursor_of_length(openapi.CURSOR_MAX + 2))


# -- property: the document's request schemas and the validators agree on every input -------------
TITLES = st.one_of(
    st.text(max_size=5),
    st.integers(openapi.TITLE_MAX - 1, openapi.TITLE_MAX + 1).map(lambda n: "x" * n),
    st.none(),
    st.integers(),
)
TAG_VALUES = st.one_of(st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z"), st.text(max_size=4), st.integers())
DUE_AT_VALUES = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2, 1, 1)).map(lambda d: d.isoformat() + "Z"),
    st.from_regex(
        r"\A20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])[Tt ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\.[0-9]{1,11})?([Zz]|[+-][0-2][0-9]:[0-5][0-9])?\Z"
    ),
    st.text(max_size=6),
    st.integers(),
)
TODO_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "title": TITLES,
        "notes": st.one_of(st.text(max_size=3), st.just("n" * (openapi.NOTES_MAX + 1)), st.integers()),
        "state": st.sampled_from(["open", "done", "Open", "", None, 1]),
        "tags": st.one_of(
            st.lists(TAG_VALUES, max_size=openapi.TAGS_MAX + 1),
            st.lists(st.just("dup"), min_size=2, max_size=2),
            st.text(max_size=3),
        ),
        "due_at": DUE_AT_VALUES,
        "extra": st.integers(),
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(TODO_BODIES)
@example({"title": "x", "due_at": "2026-06-30T23:59:60Z"})
@example({"title": "x", "due_at": "2026-02-30T00:00:00Z"})
@example({"title": "x", "due_at": "2026-01-01 00:00:00Z"})
@example({"title": "x", "due_at": "2026-01-01T00:00:00.1234567891Z"})
@example({"title": "x", "tags": ["a"] * 2})
@example({"title": "x", "tags": [f"t{i}" for i in range(openapi.TAGS_MAX + 1)]})
@example({"title": "x", "state": "Open"})
@example({"title": "x", "extra": 1})
@example({"title": "x" * openapi.TITLE_MAX, "notes": "n" * openapi.NOTES_MAX})
@example({"title": "x" * (openapi.TITLE_MAX + 1)})
@example({})
def test_todo_schema_and_validator_agree(body: dict[str, Any]) -> None:
    documented = validator("TodoInput").is_valid(body)
    accepted = accepts(validate_todo, body)
    if documented:
        assert accepted, f"the document allows what the API rejects: {body!r}"
    elif accepted:
        # The one leniency the document leaves out: a space instead of T in due_at.
        due_at = body.get("due_at")
        assert isinstance(due_at, str) and due_at[10:11] == " ", f"the API accepts what the document forbids: {body!r}"
        assert validator("TodoInput").is_valid({**body, "due_at": due_at[:10] + "T" + due_at[11:]})


PROFILE_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "display_name": st.one_of(st.text(max_size=3), st.just("d" * (openapi.DISPLAY_NAME_MAX + 1)), st.none()),
        "locale": st.one_of(
            st.sampled_from(["en", "pt-BR", "zh-Hant-TW", "x-private", "EN", "en_US", "e", "", "en-", "1234"]),
            st.text(max_size=5),
        ),
        "timezone": st.one_of(st.sampled_from(sorted(time_zones())), st.just(""), st.integers()),
        "nickname": st.text(max_size=2),
    },
)


@settings(max_examples=300, deadline=None)
@given(PROFILE_BODIES)
@example({"display_name": "x", "locale": "en_US"})
@example({"display_name": "x", "timezone": "Mars/Olympus"})
@example({"display_name": "x" * openapi.DISPLAY_NAME_MAX, "locale": "zh-Hant-TW", "timezone": "Europe/Paris"})
@example({"display_name": "x" * (openapi.DISPLAY_NAME_MAX + 1)})
def test_profile_schema_and_validator_agree(body: dict[str, Any]) -> None:
    documented = validator("ProfileInput").is_valid(body)
    accepted = accepts(validate_profile, body)
    if documented and not accepted:
        # The one rule the document leaves to the description: the zone must be in tzdata's list.
        assert body.get("timezone") not in time_zones(), body
        assert validator("ProfileInput").is_valid({**body, "timezone": "UTC"})
        assert accepts(validate_profile, {**body, "timezone": "UTC"})
    else:
        assert documented == accepted, body


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"title": TITLES}), max_size=openapi.BATCH_MAX + 1))
def test_batch_schema_and_validator_agree(items: list[dict[str, Any]]) -> None:
    body = {"todos": items}
    assert validator("TodoBatchInput").is_valid(body) == accepts(validate_batch, body)
