"""Lists (CONTRACT section 3) through chalice's test client, on the embedded defaults: their routes
are derived from their declaration, and they follow every rule todos do but batches and the admin
route. And the todos' `priority` and `list_id`, with `?list_id=` on GET /todos and the admin route.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chalicelib.ids import derived_id
from tests.conftest import auth, body

LIST = {"name": "Groceries", "position": 2}


def create_list(client: Any, sub: str = "alice", payload: Any = None, headers: Any = None) -> Any:
    answer = client.http.post("/lists", headers={**auth(sub), **(headers or {})}, body=body(payload or LIST))
    assert answer.status_code == 202, answer.body
    return answer.json_body


def error_of(response: Any) -> dict[str, Any]:
    data = json.loads(response.body)
    assert set(data) <= {"error", "message", "fields"} and isinstance(data["message"], str)
    return data


def test_create_read_replace_delete_a_list(client: Any) -> None:
    created = client.http.post("/lists", headers=auth(), body=body({"name": "Home"}))
    assert created.status_code == 202 and created.headers["Location"] == f"/lists/{created.json_body['id']}"
    list_id = created.json_body["id"]
    assert uuid.UUID(list_id).version == 7
    got = client.http.get(f"/lists/{list_id}", headers=auth())
    assert got.status_code == 200 and got.headers["ETag"] == f'"{created.json_body["version"]}"'
    row = got.json_body
    assert set(row) == {"id", "name", "position", "version", "created_at", "updated_at"}
    assert (row["id"], row["name"], row["position"]) == (list_id, "Home", 0)  # position defaults to 0
    assert (
        client.http.get(f"/lists/{list_id}", headers={**auth(), "If-None-Match": got.headers["ETag"]}).status_code
        == 304
    )
    replaced = client.http.put(f"/lists/{list_id}", headers=auth(), body=body({"name": "House", "position": 7}))
    assert replaced.status_code == 202 and replaced.json_body["version"] > created.json_body["version"]
    again = client.http.get(f"/lists/{list_id}", headers=auth()).json_body
    assert (again["name"], again["position"], again["created_at"]) == ("House", 7, row["created_at"])
    gone = client.http.delete(f"/lists/{list_id}", headers=auth(json_body=False))
    assert gone.status_code == 202 and gone.headers["Location"] == f"/lists/{list_id}"
    assert client.http.get(f"/lists/{list_id}", headers=auth()).status_code == 404
    assert client.http.put(f"/lists/{list_id}", headers=auth(), body=body({"name": "back"})).status_code == 202
    assert client.http.get(f"/lists/{list_id}", headers=auth()).json_body["name"] == "back"


def test_lists_page_in_id_order_with_an_opaque_cursor(client: Any) -> None:
    made = sorted(create_list(client, payload={"name": f"list {n}"})["id"] for n in range(7))
    walked: list[str] = []
    cursor = ""
    while True:
        page = client.http.get(f"/lists?limit=3{cursor}", headers=auth())
        assert page.status_code == 200 and set(page.json_body) == {"lists", "next_cursor"}
        walked += [item["id"] for item in page.json_body["lists"]]
        if page.json_body["next_cursor"] is None:
            break
        cursor = f"&cursor={page.json_body['next_cursor']}"
    assert walked == made
    assert len(client.http.get("/lists", headers=auth()).json_body["lists"]) == 7  # default limit 50


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=!!", "limit=1&limit=2", "min_version=0"])
def test_bad_list_queries_are_400_invalid_query(client: Any, query: str) -> None:
    answer = client.http.get(f"/lists?{query}", headers=auth())
    assert answer.status_code == 400 and error_of(answer)["error"] == "invalid_query"


def test_a_todos_filter_is_not_a_lists_and_unknown_parameters_are_ignored(client: Any) -> None:
    create_list(client)
    for query in ("state=open", "list_id=nonsense", "colour=red"):
        assert client.http.get(f"/lists?{query}", headers=auth()).status_code == 200, query


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"name": 7}, "name"),
        ({"name": "n", "position": -1}, "position"),
        ({"name": "n", "position": 1_000_001}, "position"),
        ({"name": "n", "position": 3.0}, "position"),
        ({"name": "n", "position": "3"}, "position"),
        ({"name": "n", "position": True}, "position"),
        ({"name": "n", "position": None}, "position"),
        ({"name": "n", "title": "a todo's field"}, "title"),
        ({"name": "\ud800"}, "name"),
    ],
)
def test_bad_lists_are_field_errors_and_write_nothing(client: Any, local_dir: Any, payload: Any, field: str) -> None:
    before = sorted(p.name for p in local_dir.rglob("*") if p.is_file())
    answer = client.http.post("/lists", headers=auth(), body=body(payload))
    assert answer.status_code == 400 and error_of(answer)["error"] == "validation_error"
    assert field in answer.json_body["fields"]
    assert sorted(p.name for p in local_dir.rglob("*") if p.is_file()) == before


def test_lists_edges_are_accepted(client: Any) -> None:
    for payload in ({"name": "n" * 100, "position": 1_000_000}, {"name": "💧", "position": 0}):
        list_id = create_list(client, payload=payload)["id"]
        row = client.http.get(f"/lists/{list_id}", headers=auth()).json_body
        assert (row["name"], row["position"]) == (payload["name"], payload["position"])


def test_an_idempotency_key_names_the_same_list_and_not_the_todo_of_that_key(client: Any) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = create_list(client, headers=key)
    again = create_list(client, payload={"name": "renamed"}, headers=key)
    assert again["id"] == first["id"] and again["version"] > first["version"]
    todo = client.http.post("/todos", headers={**auth(), **key}, body=body({"title": "t"})).json_body
    assert todo["id"] != first["id"]
    assert todo["id"] == derived_id("alice", "k-1")  # the todos' ids are as before lists existed
    assert client.http.get(f"/lists/{first['id']}", headers=auth()).json_body["name"] == "renamed"


def test_another_users_list_is_404_and_untouched_by_their_writes(client: Any) -> None:
    mine = create_list(client)["id"]
    assert client.http.get(f"/lists/{mine}", headers=auth("bob")).status_code == 404
    assert client.http.put(f"/lists/{mine}", headers=auth("bob"), body=body({"name": "bob's"})).status_code == 202
    assert client.http.get(f"/lists/{mine}", headers=auth()).json_body["name"] == LIST["name"]
    assert [item["name"] for item in client.http.get("/lists", headers=auth("bob")).json_body["lists"]] == ["bob's"]
    assert client.http.delete(f"/lists/{mine}", headers=auth("bob", json_body=False)).status_code == 202
    assert client.http.get(f"/lists/{mine}", headers=auth()).json_body["name"] == LIST["name"]
    assert client.http.get("/lists", headers=auth("bob")).json_body["lists"] == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "bad_id", ["NOT-A-UUID", "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"]
)
def test_malformed_list_ids_are_400_invalid_id(client: Any, method: str, bad_id: str) -> None:
    answer = client.http.request(method, f"/lists/{bad_id}", headers=auth(), body=body(LIST))
    assert answer.status_code == 400 and error_of(answer)["error"] == "invalid_id"


def test_lists_have_no_batch_and_no_admin_route(client: Any) -> None:
    batch = client.http.post("/lists/batch", headers=auth(), body=body({"lists": [LIST]}))
    assert batch.status_code == 404 and error_of(batch)["error"] == "not_found"  # /lists/{list_id} takes no POST
    admin = client.http.get("/users/alice/lists", headers=auth("root", ["admins"]))
    assert admin.status_code == 404


def test_min_version_on_list_writes_and_reads(client: Any) -> None:
    first = create_list(client)
    later = client.http.put(
        f"/lists/{first['id']}?min_version={first['version'] + 500_000}", headers=auth(), body=body({"name": "x"})
    ).json_body
    assert later["version"] > first["version"] + 500_000
    assert client.http.get(f"/lists/{first['id']}?min_version={later['version']}", headers=auth()).status_code == 200
    future = client.http.get(f"/lists/{first['id']}?min_version={later['version'] + 1}", headers=auth())
    assert future.status_code == 503 and future.headers["Retry-After"] == "1"
    ahead = client.http.get(f"/lists?min_version={later['version'] + 60_000_000}", headers=auth())
    assert ahead.status_code == 400 and error_of(ahead)["error"] == "invalid_query"


# -- todos: priority and list_id ---------------------------------------------------------------------
def test_todos_carry_priority_and_list_id(client: Any) -> None:
    list_id = create_list(client)["id"]
    created = client.http.post(
        "/todos", headers=auth(), body=body({"title": "milk", "priority": 1, "list_id": list_id})
    )
    todo = client.http.get(f"/todos/{created.json_body['id']}", headers=auth()).json_body
    assert (todo["priority"], todo["list_id"]) == (1, list_id)
    plain = client.http.post("/todos", headers=auth(), body=body({"title": "bread"})).json_body
    shown = client.http.get(f"/todos/{plain['id']}", headers=auth()).json_body
    assert (shown["priority"], shown["list_id"]) == (3, None)


@pytest.mark.parametrize("priority", [0, 6, 3.0, "3", True, None, [3]])
def test_priority_is_a_json_integer_from_1_to_5(client: Any, priority: Any) -> None:
    answer = client.http.post("/todos", headers=auth(), body=body({"title": "t", "priority": priority}))
    assert answer.status_code == 400 and answer.json_body["fields"] == {"priority": ["must be an integer from 1 to 5"]}


@pytest.mark.parametrize("list_id", ["", "home", "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", 7, True])
def test_list_id_is_a_canonical_uuid_or_null(client: Any, list_id: Any) -> None:
    answer = client.http.post("/todos", headers=auth(), body=body({"title": "t", "list_id": list_id}))
    assert answer.status_code == 400 and "list_id" in answer.json_body["fields"]


def test_list_id_is_not_checked_against_the_lists_and_outlives_its_list(client: Any) -> None:
    nowhere = str(uuid.uuid4())  # writes never read the database: any canonical UUID is taken
    todo = client.http.post("/todos", headers=auth(), body=body({"title": "t", "list_id": nowhere})).json_body
    assert client.http.get(f"/todos/{todo['id']}", headers=auth()).json_body["list_id"] == nowhere
    kept = create_list(client)["id"]
    inside = client.http.post("/todos", headers=auth(), body=body({"title": "u", "list_id": kept})).json_body
    client.http.delete(f"/lists/{kept}", headers=auth(json_body=False))
    assert client.http.get(f"/todos/{inside['id']}", headers=auth()).json_body["list_id"] == kept


def test_todos_filter_by_list_id_on_the_own_and_the_admin_route(client: Any) -> None:
    home, work = create_list(client)["id"], create_list(client)["id"]
    ids = {}
    for n, (list_id, state) in enumerate([(home, "open"), (home, "done"), (work, "open"), (None, "open")]):
        payload = {"title": f"t{n}", "list_id": list_id, "state": state}
        ids[n] = client.http.post("/todos", headers=auth(), body=body(payload)).json_body["id"]
    titles = lambda answer: sorted(t["title"] for t in answer.json_body["todos"])  # noqa: E731
    assert titles(client.http.get(f"/todos?list_id={home}", headers=auth())) == ["t0", "t1"]
    assert titles(client.http.get(f"/todos?list_id={home}&state=open", headers=auth())) == ["t0"]
    assert titles(client.http.get(f"/todos?list_id={work}", headers=auth())) == ["t2"]
    admin = auth("root", ["admins"])
    assert titles(client.http.get(f"/users/alice/todos?list_id={home}", headers=admin)) == ["t0", "t1"]
    assert titles(client.http.get(f"/todos?list_id={home}", headers=auth("bob"))) == []
    paged = client.http.get(f"/todos?list_id={home}&limit=1", headers=auth()).json_body
    assert len(paged["todos"]) == 1 and paged["next_cursor"] is not None


@pytest.mark.parametrize(
    "bad", ["nonsense", "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", "", "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"]
)
def test_a_bad_list_id_filter_is_400_invalid_query(client: Any, bad: str) -> None:
    for path in (f"/todos?list_id={bad}", f"/users/alice/todos?list_id={bad}"):
        answer = client.http.get(path, headers=auth("root", ["admins"]))
        assert answer.status_code == 400 and error_of(answer)["error"] == "invalid_query", path
    twice = client.http.get(f"/todos?list_id={uuid.uuid4()}&list_id={uuid.uuid4()}", headers=auth())
    assert twice.status_code == 400 and error_of(twice)["error"] == "invalid_query"
