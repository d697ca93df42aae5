"""Lists and the todos' new fields through the pending writes and the read cache, on the real Redis
(the app as bootstrap wires it with CACHE_URL, a transport that holds commands until a test loads
them): a writer reads its own lists at once, by key and in pages; `?list_id=` applies to what the
caller would see were everything loaded; cache entries hold the resource and its read shape in
their key, so a row cached in another shape is never shown; a pending write recorded by an older
release is shown with the new fields' defaults."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chalicelib.readers.cache import entry_key
from chalicelib.readers.pending import pending_key
from tests.conftest import auth, body
from tests.integration.test_pending_redis import app_with, new_owner, owners  # noqa: F401 - fixtures

pytestmark = pytest.mark.redis


def names(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.json_body
    return [item["name"] for item in answer.json_body["lists"]]


def test_own_lists_show_at_once_by_key_and_in_pages_then_load(app_with, owners, redis):  # noqa: F811
    client, built, held = app_with
    me = new_owner(owners)
    made = [client.http.post("/lists", headers=auth(me), body=body({"name": n})).json_body for n in ("a", "b", "c")]
    ids = [m["id"] for m in made]
    client.http.put(f"/lists/{ids[1]}", headers=auth(me), body=body({"name": "B", "position": 9}))
    client.http.delete(f"/lists/{ids[2]}", headers=auth(me, json_body=False))
    assert built.master.query("SELECT COUNT(*) FROM lists")[0][0] == 0  # nothing loaded
    got = client.http.get(f"/lists/{ids[1]}", headers=auth(me))
    assert got.status_code == 200 and (got.json_body["name"], got.json_body["position"]) == ("B", 9)
    assert client.http.get(f"/lists/{ids[2]}", headers=auth(me)).status_code == 404  # a pending delete
    shown = [name for _, name in sorted(zip(ids[:2], ("a", "B"), strict=True))]
    assert names(client.http.get("/lists", headers=auth(me))) == shown
    assert redis.execute_command("HGET", pending_key(me, "sluice:v1"), f"l:{ids[0]}") is not None
    # Other users see only what is loaded; once loaded, everyone reads the same.
    other = new_owner(owners)
    assert names(client.http.get("/lists", headers=auth(other))) == []
    held.load_all(built)
    assert names(client.http.get("/lists", headers=auth(me))) == shown
    assert client.http.get(f"/lists/{ids[1]}", headers=auth(me)).json_body["name"] == "B"
    cached = redis.execute_command("GET", entry_key("lists", me, ids[1]))
    assert cached is not None and json.loads(cached.split(b"|", 3)[3])["name"] == "B"


def test_list_id_filters_what_the_caller_would_see_were_everything_loaded(app_with, owners):  # noqa: F811
    client, built, held = app_with
    me = new_owner(owners)
    home, work = str(uuid.uuid4()), str(uuid.uuid4())
    moving = client.http.post("/todos", headers=auth(me), body=body({"title": "moving", "list_id": home})).json_body
    client.http.post("/todos", headers=auth(me), body=body({"title": "staying", "list_id": home}))
    held.load_all(built)
    titles = lambda answer: sorted(t["title"] for t in answer.json_body["todos"])  # noqa: E731
    assert titles(client.http.get(f"/todos?list_id={home}", headers=auth(me))) == ["moving", "staying"]
    # a pending write moves one to another list: the filtered pages follow it before it loads
    client.http.put(f"/todos/{moving['id']}", headers=auth(me), body=body({"title": "moving", "list_id": work}))
    assert titles(client.http.get(f"/todos?list_id={home}", headers=auth(me))) == ["staying"]
    assert titles(client.http.get(f"/todos?list_id={work}", headers=auth(me))) == ["moving"]
    held.load_all(built)
    assert titles(client.http.get(f"/todos?list_id={work}", headers=auth(me))) == ["moving"]


def test_a_row_cached_in_another_shape_is_never_shown(app_with, owners, redis):  # noqa: F811
    client, built, held = app_with
    me = new_owner(owners)
    todo = client.http.post("/todos", headers=auth(me), body=body({"title": "now", "priority": 2})).json_body
    held.load_all(built)
    # What the release before would have cached for it, under its own key: a row without the
    # new fields, and another title. This release's key is another (the read shape's digest).
    old_key = f"sluice:v1:todo:{me}:{todo['id']}"
    assert entry_key("todos", me, todo["id"]) != old_key
    stale = {"id": todo["id"], "title": "cached by the old release", "version": todo["version"] + 1}
    redis.execute_command("SET", old_key, b"p|%d||" % (todo["version"] + 1) + json.dumps(stale).encode(), "PX", 60000)
    redis.execute_command("HDEL", pending_key(me, "sluice:v1"), f"t:{todo['id']}")
    got = client.http.get(f"/todos/{todo['id']}", headers=auth(me)).json_body
    assert (got["title"], got["priority"]) == ("now", 2)
    redis.execute_command("DEL", old_key)


def test_a_pending_write_recorded_by_an_older_release_is_shown_with_the_new_fields_defaults(
    app_with,  # noqa: F811
    owners,  # noqa: F811
    redis,
):
    client, _, _ = app_with
    me = new_owner(owners)
    todo = client.http.post("/todos", headers=auth(me), body=body({"title": "old shape"})).json_body
    hash_key, field = pending_key(me, "sluice:v1"), f"t:{todo['id']}"
    head, payload = redis.execute_command("HGET", hash_key, field).rsplit(b"|", 1)
    row = json.loads(payload)
    for added in ("priority", "list_id"):  # as a version-1 API recorded it
        del row[added]
    row["colour"] = "a field of some newer release"
    redis.execute_command("HSET", hash_key, field, head + b"|" + json.dumps(row).encode())
    got = client.http.get(f"/todos/{todo['id']}", headers=auth(me))
    assert got.status_code == 200 and (got.json_body["priority"], got.json_body["list_id"]) == (3, None)
    assert "colour" not in got.json_body
    page = client.http.get("/todos", headers=auth(me)).json_body["todos"]
    assert [(t["title"], t["priority"]) for t in page] == [("old shape", 3)]
