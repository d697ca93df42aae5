"""Content-Type on every route (CONTRACT section 3): GET and DELETE ignore it, POST and PUT need
JSON, and the checks run in the order 401, invalid_id, 413, 415, invalid_json, validation_error.

Each request goes to the Lambda handler as production's API Gateway hands it over (claims as
strings), and through chalice's test client (the emulated gateway of `chalice local`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import auth, body
from tests.gateway import LambdaContext, call, prod_claims, rest_event

OTHER_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "garbage",
    "",
    "application/json; charset=latin-1",
]
GOOD_ID = "0190b2a0-1234-7abc-8def-0123456789ab"
TODO = {"title": "milk"}


def prod(method: str, resource: str, path: str, headers: dict[str, str], sub: str | None, **kwargs: Any) -> Any:
    import app

    groups = kwargs.pop("groups", None)
    claims = prod_claims(sub, groups) if sub is not None else None
    kwargs["query"] = kwargs.get("query") or ""
    event = rest_event(method, resource, path, claims=claims, headers=headers, **kwargs)
    return call(app.app, event, LambdaContext())


def code_of(payload: Any) -> str | None:
    return payload.get("error") if isinstance(payload, dict) else None


# (method, resource, path, path parameters, query, sub, groups) -> what a GET answers without a type
GETS = [
    ("GET", "/health", "/health", None, None, None, None, 200, None),
    ("GET", "/openapi.json", "/openapi.json", None, None, None, None, 200, None),
    ("GET", "/todos", "/todos", None, None, None, None, 401, "unauthorized"),
    ("GET", "/todos", "/todos", None, None, "alice", None, 200, None),
    ("GET", "/todos", "/todos", None, "limit=0", "alice", None, 400, "invalid_query"),
    ("GET", "/todos/{todo_id}", "/todos/BAD", {"todo_id": "BAD"}, None, None, None, 401, "unauthorized"),
    ("GET", "/todos/{todo_id}", "/todos/BAD", {"todo_id": "BAD"}, None, "alice", None, 400, "invalid_id"),
    ("GET", "/todos/{todo_id}", f"/todos/{GOOD_ID}", {"todo_id": GOOD_ID}, None, "alice", None, 404, "not_found"),
    ("GET", "/me", "/me", None, None, None, None, 401, "unauthorized"),
    ("GET", "/me", "/me", None, None, "alice", None, 404, "not_found"),
    ("GET", "/users/{sub}/todos", "/users/bob/todos", {"sub": "bob"}, None, None, None, 401, "unauthorized"),
    ("GET", "/users/{sub}/todos", "/users/bob/todos", {"sub": "bob"}, None, "alice", None, 403, "forbidden"),
    ("GET", "/users/{sub}/todos", "/users/bob/todos", {"sub": "bob"}, None, "root", "admins", 200, None),
]


@pytest.mark.parametrize("content_type", OTHER_TYPES)
@pytest.mark.parametrize("case", GETS, ids=lambda c: f"{c[2]}?{c[4] or ''} as {c[5]}")
def test_a_get_with_any_content_type_is_answered_as_one_without(services: Any, case: Any, content_type: str) -> None:
    method, resource, path, params, query, sub, groups, status, code = case
    options = {"path_params": params, "query": query, "groups": groups}
    plain = prod(method, resource, path, {}, sub, **options)
    typed = prod(method, resource, path, {"Content-Type": content_type}, sub, **options)
    assert plain[0] == typed[0] == status, (plain, typed)
    assert code_of(typed[2]) == code
    assert typed[2] == plain[2]


@pytest.mark.parametrize("content_type", OTHER_TYPES)
def test_gets_through_the_emulated_gateway_ignore_the_content_type(client: Any, content_type: str) -> None:
    typed = {"Content-Type": content_type}
    assert client.http.get("/health", headers=typed).status_code == 200
    assert client.http.get("/openapi.json", headers=typed).status_code == 200
    assert client.http.get("/todos", headers=typed).status_code == 401
    mine = {**auth("alice", json_body=False), **typed}
    assert client.http.get("/todos", headers=mine).status_code == 200
    assert json.loads(client.http.get("/todos/BAD", headers=mine).body)["error"] == "invalid_id"
    assert client.http.get(f"/todos/{GOOD_ID}", headers=mine).status_code == 404
    assert client.http.get("/me", headers=mine).status_code == 404
    assert client.http.get("/users/bob/todos", headers=mine).status_code == 403
    admin = {**auth("root", ["admins"], json_body=False), **typed}
    assert client.http.get("/users/bob/todos", headers=admin).status_code == 200


# -- DELETE ignores the type too, but keeps 401, invalid_id and 413 in that order ----------------------------
@pytest.mark.parametrize("content_type", OTHER_TYPES)
def test_delete_ignores_the_content_type_in_the_contract_order(services: Any, content_type: str) -> None:
    headers = {"Content-Type": content_type}
    big = "x" * (services.settings.max_body_bytes + 1)
    one = ("DELETE", "/todos/{todo_id}")
    assert code_of(prod(*one, "/todos/BAD", headers, None, path_params={"todo_id": "BAD"}, body=big)[2]) == (
        "unauthorized"
    )
    assert prod(*one, "/todos/BAD", headers, "alice", path_params={"todo_id": "BAD"}, body=big)[0] == 400
    got = prod(*one, f"/todos/{GOOD_ID}", headers, "alice", path_params={"todo_id": GOOD_ID}, body=big)
    assert (got[0], code_of(got[2])) == (413, "payload_too_large")
    got = prod(*one, f"/todos/{GOOD_ID}", headers, "alice", path_params={"todo_id": GOOD_ID}, body="{}")
    assert got[0] == 202, got


# -- POST and PUT: 401, invalid_id, 413, 415, invalid_json, validation_error -------------------------------
WRITES = [
    ("POST", "/todos", "/todos", None, TODO),
    ("POST", "/todos/batch", "/todos/batch", None, {"todos": [TODO]}),
    ("PUT", "/todos/{todo_id}", f"/todos/{GOOD_ID}", {"todo_id": GOOD_ID}, TODO),
    ("PUT", "/me", "/me", None, {"display_name": "Al"}),
]


@pytest.mark.parametrize("content_type", [t for t in OTHER_TYPES if not t.startswith("application/json")])
@pytest.mark.parametrize("write", WRITES, ids=lambda w: f"{w[0]} {w[1]}")
def test_writes_check_the_type_in_the_contract_order(services: Any, write: Any, content_type: str) -> None:
    method, resource, path, params, payload = write
    typed = {"Content-Type": content_type}
    json_type = {"Content-Type": "application/json"}
    big = " " * (services.settings.max_body_bytes + 1)

    def code(headers: dict[str, str], sub: str | None, text: str, where: str = path, at: Any = params) -> Any:
        return code_of(prod(method, resource, where, headers, sub, path_params=at, body=text)[2])

    # 401 before everything, whatever the type and body
    assert code(typed, None, big) == "unauthorized"
    if params:  # invalid_id next
        assert code(typed, "alice", big, "/todos/BAD", {"todo_id": "BAD"}) == "invalid_id"
    assert code(typed, "alice", big) == "payload_too_large"  # then 413
    assert code(typed, "alice", "{") == "unsupported_media_type"  # then 415
    assert code(typed, "alice", body(payload)) == "unsupported_media_type"  # a good body changes nothing
    assert code(json_type, "alice", "{") == "invalid_json"  # then invalid_json
    assert code(json_type, "alice", '{"nope": 1}') == "validation_error"  # then validation_error
    accepted = prod(method, resource, path, json_type, "alice", path_params=params, body=body(payload))
    assert accepted[0] == 202, accepted
