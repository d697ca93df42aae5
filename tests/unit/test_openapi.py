"""The OpenAPI document cannot drift: from docs/openapi.yaml, from app.py's routes, or from the rules
the validators enforce (CONTRACT section 3)."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import models, openapi
from chalicelib.config import DEFAULT_MAX_BODY_BYTES
from chalicelib.errors import ApiError
from chalicelib.http import CURSOR_MAX, LIMIT_DEFAULT, LIMIT_MAX, LIMIT_MIN, decode_cursor, parse_limit
from chalicelib.identity import MAX_SUB_CHARS
from chalicelib.ids import MAX_VERSION
from chalicelib.models import BATCH_MAX, Invalid, time_zones, validate_batch, validate_profile, validate_todo
from chalicelib.openapi_schemas import name_of
from chalicelib.resources import RESOURCES, Rule
from tests import factories

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


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    """A response, its shared component resolved."""
    return _resolve(answer, DOC) if "$ref" in answer else answer


def test_every_secured_operation_documents_401_500_and_503_and_error_bodies_share_one_shape() -> None:
    for key, operation in _doc_operations().items():
        responses = operation["responses"]
        if operation.get("security") != []:
            assert {"401", "500", "503"} <= set(responses), key
        for status, raw in responses.items():
            if int(status) >= 400:
                assert raw["$ref"].startswith("#/components/responses/"), (key, status)
                answer = DOC["components"]["responses"][raw["$ref"].rsplit("/", 1)[1]]
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                if status == "503":
                    assert "Retry-After" in answer["headers"], key


def test_writes_document_413_and_415_where_the_code_checks_them() -> None:
    ops = _doc_operations()
    with_body = [key for key, op in ops.items() if "requestBody" in op]
    assert {("/todos", "post"), ("/todos/batch", "post"), ("/lists/{list_id}", "put"), ("/me", "put")} <= set(with_body)
    for key in with_body:
        assert {"202", "413", "415"} <= set(ops[key]["responses"]), key
        assert ops[key]["requestBody"]["required"] is True
    for key in [k for k in ops if k[1] == "delete"]:
        delete = ops[key]["responses"]
        assert "413" in delete and "415" not in delete, "DELETE ignores the content type"


def test_every_collection_resource_has_its_routes_and_schemas() -> None:
    schemas = DOC["components"]["schemas"]
    for resource in RESOURCES.values():
        name = name_of(resource)
        assert {f"{name}Input", name} <= set(schemas)
        if resource.collection is None:
            assert {"get", "put"} == {m for m in DOC["paths"][resource.path] if m in METHODS}
            continue
        item = f"{resource.path}/{{{resource.singular}_id}}"
        assert {m for m in DOC["paths"][resource.path] if m in METHODS} == {"get", "post"}
        assert {m for m in DOC["paths"][item] if m in METHODS} == {"get", "put", "delete"}
        assert ((f"{resource.path}/batch", "post") in _doc_operations()) == bool(resource.collection.batch)
        assert ((f"/users/{{sub}}{resource.path}", "get") in _doc_operations()) == resource.collection.admin
        page = [_resolve(p, DOC) for p in DOC["paths"][resource.path]["get"]["parameters"]]
        filters = {p["name"] for p in page} - {"limit", "cursor", "min_version"}
        assert filters == set(resource.collection.filters), resource.name


# -- (c) the limits in the document are the ones the validators enforce -------------------------
def test_constants_imported_from_the_code() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["Todo"]["properties"]["version"]["maximum"] == MAX_VERSION == 2**53 - 1
    assert DOC["components"]["parameters"]["Sub"]["schema"]["maxLength"] == MAX_SUB_CHARS
    assert str(DEFAULT_MAX_BODY_BYTES) in json.dumps(DOC["paths"]["/todos"]["post"]["requestBody"])
    for resource in RESOURCES.values():
        name = name_of(resource)
        written = set(schemas[f"{name}Input"]["properties"])
        assert written == set(resource.field_names)
        assert set(schemas[name]["properties"]) == set(resource.read_fields)


def edges(rule: Rule) -> list[tuple[Any, bool]]:
    """Values at a rule's limits and one past them, and whether the validator takes each."""
    if rule.kind == "text" and not rule.pattern and not rule.known:
        high = rule.max_length or 0
        return [("é" * high, True), ("é" * (high + 1), False), ("", rule.min_length == 0)]
    if rule.kind == "integer":
        low, high = rule.minimum or 0, rule.maximum or 0
        return [(low, True), (high, True), (low - 1, False), (high + 1, False), (float(low), False), (True, False)]
    if rule.kind == "list":
        most = rule.max_items or 0
        item = "a0" if re.fullmatch(rule.pattern or ".*", "a0") else None
        return [([f"a{n}" for n in range(most)], item is not None), ([f"a{n}" for n in range(most + 1)], False)]
    if rule.kind == "uuid":
        return [("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", True), ("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", False)]
    return []


@pytest.mark.parametrize(
    ("resource", "field"), [(r.name, f) for r in RESOURCES.values() for f in r.field_names], ids=lambda v: str(v)
)
def test_each_field_is_documented_with_its_declared_limits(resource: str, field: str) -> None:
    declared = RESOURCES[resource]
    rule = declared.rules()[field]
    schema = DOC["components"]["schemas"][f"{name_of(declared)}Input"]["properties"][field]
    base = factories.make(resource)
    check = validator(f"{name_of(declared)}Input")
    for value, taken in edges(rule):
        body = {**base, field: value}
        assert accepts(validate_for(resource), body) == taken, (field, value)
        assert check.is_valid(body) == taken, (field, value)
    if rule.kind == "text":
        assert (schema.get("minLength", 0), schema["maxLength"]) == (rule.min_length, rule.max_length)
    if rule.kind == "integer":
        assert (schema["minimum"], schema["maximum"]) == (rule.minimum, rule.maximum)
    if rule.kind == "list":
        assert schema["maxItems"] == rule.max_items and schema.get("uniqueItems", False) == rule.unique
    assert schema.get("default", None) == declared.defaults().get(field)


def validate_for(resource: str) -> Any:
    return models.VALIDATORS[resource]


def test_profile_limits() -> None:
    props = DOC["components"]["schemas"]["ProfileInput"]["properties"]
    locale_max, zone_max = props["locale"]["maxLength"], props["timezone"]["maxLength"]
    at_limit = ("en-" + "-".join(["abcdefgh"] * 4)[: locale_max - 3]).rstrip("-")
    assert len(at_limit) <= locale_max
    long_locale = "en-" + "-".join(["abcdefgh"] * 5)
    with pytest.raises(Invalid) as over:
        validate_profile({"display_name": "x", "locale": long_locale})
    assert f"at most {locale_max}" in str(over.value)
    with pytest.raises(Invalid) as too_long:
        validate_profile({"display_name": "x", "timezone": "A" * (zone_max + 1)})
    assert f"at most {zone_max}" in str(too_long.value)
    with pytest.raises(Invalid) as at_max:
        validate_profile({"display_name": "x", "timezone": "A" * zone_max})
    assert "at most" not in str(at_max.value)


def test_every_known_zone_fits_the_timezone_schema() -> None:
    check = jsonschema_rs.Draft4Validator(json_schema("ProfileInput"))
    for zone in time_zones():
        assert check.is_valid({"display_name": "x", "timezone": zone}), zone
        assert accepts(validate_profile, {"display_name": "x", "timezone": zone}), zone


def test_batch_limits() -> None:
    todos = DOC["components"]["schemas"]["TodoBatchInput"]["properties"]["todos"]
    assert (todos["minItems"], todos["maxItems"]) == (1, BATCH_MAX)
    assert accepts(validate_batch, {"todos": [{"title": "t"}] * BATCH_MAX})
    assert not accepts(validate_batch, {"todos": [{"title": "t"}] * (BATCH_MAX + 1)})
    assert not accepts(validate_batch, {"todos": []})


def test_limit_query_parameter() -> None:
    for resource in RESOURCES.values():
        if resource.collection is None:
            continue
        collection = resource.collection
        schema = DOC["components"]["parameters"][f"{name_of(resource)}Limit"]["schema"]
        assert (schema["minimum"], schema["maximum"], schema["default"]) == (
            collection.limit_min,
            collection.limit_max,
            collection.limit_default,
        )
    assert parse_limit(None) == LIMIT_DEFAULT
    assert parse_limit(str(LIMIT_MIN)) == LIMIT_MIN
    assert parse_limit(str(LIMIT_MAX)) == LIMIT_MAX
    for bad in (str(LIMIT_MIN - 1), str(LIMIT_MAX + 1), "-1", "1.0", "ten", ""):
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
    assert DOC["components"]["parameters"]["Cursor"]["schema"]["maxLength"] == CURSOR_MAX
    at_limit = _cursor_of_length(CURSOR_MAX)
    assert decode_cursor(at_limit) == "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ApiError):
        decode_cursor(_cursor_of_length(CURSOR_MAX + 2))


# -- property: the document's request schemas and the validators agree on every input -------------
@st.composite
def hostile_bodies(draw: st.DrawFn, resource: str) -> Any:
    """A valid body of `resource` with some fields replaced by values they must refuse, some
    required ones left out, and now and then an unknown field."""
    declared = RESOURCES[resource]
    rules = declared.rules()
    body = dict(draw(factories.bodies(resource)))
    for name in draw(st.lists(st.sampled_from(declared.field_names), max_size=2, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(factories.refused(rules[name]))
        else:
            body.pop(name, None)
    if draw(st.integers(0, 5)) == 0:
        body["extra"] = 1
    return body


def leniency(resource: str, body: dict[str, Any], documented: bool, accepted: bool) -> bool:
    """The two places the document is deliberately looser or stricter than the validator: a time
    zone must also be in tzdata's list, and the server takes a space instead of `T` in a date-time."""
    rules = RESOURCES[resource].rules()
    for name, rule in rules.items():
        value = body.get(name)
        if documented and not accepted and rule.known is not None and value not in rule.known():
            return True
        if accepted and not documented and rule.kind == "datetime" and isinstance(value, str) and value[10:11] == " ":
            return True
    return False


@pytest.mark.parametrize("resource", sorted(RESOURCES))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_every_resource_schema_and_validator_agree(resource: str, data: st.DataObject) -> None:
    body = data.draw(st.one_of(factories.bodies(resource), hostile_bodies(resource)))
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: refused by the validator, unreadable to jsonschema_rs
        assert not accepts(models.VALIDATORS[resource], body)
        return
    documented = validator(f"{name_of(RESOURCES[resource])}Input").is_valid(body)
    accepted = accepts(models.VALIDATORS[resource], body)
    assert documented == accepted or leniency(resource, body, documented, accepted), body


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x", "due_at": "2026-06-30T23:59:60Z"},
        {"title": "x", "due_at": "2026-02-30T00:00:00Z"},
        {"title": "x", "due_at": "2026-01-01T00:00:00.1234567891Z"},
        {"title": "x", "tags": ["a"] * 2},
        {"title": "x", "state": "Open"},
        {"title": "x", "extra": 1},
        {"title": "x", "priority": 3.0},
        {"title": "x", "priority": "3"},
        {"title": "x", "priority": True},
        {"title": "x", "priority": None},
        {"title": "x", "list_id": None},
        {"title": "x", "list_id": "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"},
        {},
    ],
)
def test_todo_edges_agree(body: dict[str, Any]) -> None:
    assert validator("TodoInput").is_valid(body) == accepts(validate_todo, body), body


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"title": st.one_of(st.text(max_size=5), st.none())}), max_size=BATCH_MAX + 1))
def test_batch_schema_and_validator_agree(items: list[dict[str, Any]]) -> None:
    body = {"todos": items}
    assert validator("TodoBatchInput").is_valid(body) == accepts(validate_batch, body)
