"""Validation of what clients write (CONTRACT section 3): every rule, at its edges."""

from __future__ import annotations

import pytest

from chalicelib.models import VALIDATORS, Invalid, validate_batch, validate_profile, validate_todo, validator


def fields_of(call, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(Invalid) as info:
        call(*args)
    return info.value.fields


def test_todo_defaults_are_filled():
    assert validate_todo({"title": "t"}) == {
        "title": "t",
        "notes": "",
        "state": "open",
        "tags": [],
        "due_at": None,
        "priority": 3,
        "list_id": None,
    }


@pytest.mark.parametrize("priority", [1, 3, 5])
def test_priority_takes_integers_1_to_5(priority):
    assert validate_todo({"title": "t", "priority": priority})["priority"] == priority


@pytest.mark.parametrize("priority", [0, 6, -1, 3.0, "3", True, False, None, [3], 2**64])
def test_priority_is_a_json_integer_from_1_to_5_only(priority):
    assert fields_of(validate_todo, {"title": "t", "priority": priority}) == {
        "priority": ["must be an integer from 1 to 5"]
    }


def test_list_id_is_a_canonical_uuid_or_null():
    list_id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert validate_todo({"title": "t", "list_id": list_id})["list_id"] == list_id
    assert validate_todo({"title": "t", "list_id": None})["list_id"] is None
    for bad in (list_id.upper(), list_id.replace("-", ""), "", "home", 7, True, [list_id]):
        assert "list_id" in fields_of(validate_todo, {"title": "t", "list_id": bad}), bad


def test_a_version_1_todo_knows_neither_priority_nor_list_id():
    old = validator("todos", 1)
    assert old({"title": "t"}) == validate_todo({"title": "t"})
    assert set(fields_of(old, {"title": "t", "priority": 3, "list_id": None})) == {"priority", "list_id"}


def test_lists_rules():
    validate_list = VALIDATORS["lists"]
    assert validate_list({"name": "Home"}) == {"name": "Home", "position": 0}
    assert validate_list({"name": "n" * 100, "position": 1_000_000})["position"] == 1_000_000
    assert fields_of(validate_list, {}) == {"name": ["is required"]}
    for body in ({"name": ""}, {"name": "n" * 101}, {"name": 5}):
        assert "name" in fields_of(validate_list, body)
    for position in (-1, 1_000_001, 1.5, "1", None, True):
        assert "position" in fields_of(validate_list, {"name": "n", "position": position})
    assert "title" in fields_of(validate_list, {"name": "n", "title": "x"})


@pytest.mark.parametrize("title", ["x", "é" * 200, "💧" * 200])
def test_title_lengths_accepted_count_characters_not_bytes(title):
    assert validate_todo({"title": title})["title"] == title


@pytest.mark.parametrize("title", ["", "x" * 201, 5, None, ["t"], True, "\ud800"])
def test_bad_titles_are_field_errors(title):
    assert "title" in fields_of(validate_todo, {"title": title})


def test_title_is_required():
    assert fields_of(validate_todo, {"notes": "n"}) == {"title": ["is required"]}


def test_notes_limit():
    assert validate_todo({"title": "t", "notes": "n" * 10000})["notes"] == "n" * 10000
    assert "notes" in fields_of(validate_todo, {"title": "t", "notes": "n" * 10001})


@pytest.mark.parametrize("state", ["closed", "OPEN", "", None, 1])
def test_state_must_be_open_or_done(state):
    assert "state" in fields_of(validate_todo, {"title": "t", "state": state})


def test_done_state():
    assert validate_todo({"title": "t", "state": "done"})["state"] == "done"


@pytest.mark.parametrize(
    "tags",
    [["a"], ["a" * 32], ["0", "a_b", "a-b"], [f"t{i}" for i in range(20)], []],
)
def test_good_tags(tags):
    assert validate_todo({"title": "t", "tags": tags})["tags"] == tags


@pytest.mark.parametrize(
    "tags",
    [
        ["A"],
        ["-a"],
        ["_a"],
        ["a" * 33],
        ["a b"],
        ["a\n"],
        [""],
        [1],
        "a",
        {"a": 1},
        ["a", "a"],
        [f"t{i}" for i in range(21)],
    ],
)
def test_bad_tags(tags):
    assert "tags" in fields_of(validate_todo, {"title": "t", "tags": tags})


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-01-31T09:00:00Z", "2026-01-31T09:00:00Z"),
        ("2026-01-31t09:00:00z", "2026-01-31T09:00:00Z"),
        ("2026-01-31T09:00:00+02:00", "2026-01-31T07:00:00Z"),
        ("2026-01-31T23:30:00-01:00", "2026-02-01T00:30:00Z"),
        ("2026-01-31T09:00:00.5Z", "2026-01-31T09:00:00.500000Z"),
        ("2026-01-31T09:00:00.123456789Z", "2026-01-31T09:00:00.123456Z"),
        (None, None),
    ],
)
def test_due_at_is_normalised_to_utc(given, stored):
    assert validate_todo({"title": "t", "due_at": given})["due_at"] == stored


@pytest.mark.parametrize(
    "due_at",
    [
        "2026-01-31",
        "2026-01-31T09:00:00",  # no offset
        "2026-02-30T09:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T09:00:60Z",
        "2026-01-31T09:00:00+25:00",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "tomorrow",
        12,
        "2026-01-31T09:00:00Z ",
    ],
)
def test_bad_due_at(due_at):
    assert "due_at" in fields_of(validate_todo, {"title": "t", "due_at": due_at})


def test_unknown_fields_are_errors_and_all_errors_are_reported_together():
    fields = fields_of(validate_todo, {"title": "", "owner": "mallory", "state": "x"})
    assert set(fields) == {"title", "owner", "state"}


@pytest.mark.parametrize("body", [[], "t", 1, None])
def test_todo_must_be_an_object(body):
    assert fields_of(validate_todo, body)


def test_profile_defaults_and_rules():
    assert validate_profile({"display_name": "Ana"}) == {"display_name": "Ana", "locale": "en", "timezone": "UTC"}
    assert validate_profile({"display_name": "A" * 100, "locale": "pt-BR", "timezone": "America/Sao_Paulo"})[
        "locale"
    ] == ("pt-BR")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "display_name"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "A" * 101}, "display_name"),
        ({"display_name": "A", "locale": "english!"}, "locale"),
        ({"display_name": "A", "locale": "e"}, "locale"),
        ({"display_name": "A", "locale": "en-" + "a" * 40}, "locale"),
        ({"display_name": "A", "timezone": "Mars/Olympus"}, "timezone"),
        ({"display_name": "A", "timezone": "../../etc/passwd"}, "timezone"),
        ({"display_name": "A", "sub": "bob"}, "sub"),
    ],
)
def test_bad_profiles(body, field):
    assert field in fields_of(validate_profile, body)


@pytest.mark.parametrize("locale", ["en", "de-CH", "zh-Hant-TW", "es-419", "sr-Latn", "x-private", "en-US-x-twain"])
def test_bcp47_tags(locale):
    assert validate_profile({"display_name": "A", "locale": locale})["locale"] == locale


def test_batch_errors_are_keyed_by_position():
    fields = fields_of(validate_batch, {"todos": [{"title": "ok"}, {"title": ""}, {"title": "x", "tags": ["A"]}]})
    assert set(fields) == {"todos.1.title", "todos.2.tags"}


@pytest.mark.parametrize("body", [{}, {"todos": []}, {"todos": "x"}, {"todos": [{"title": "t"}] * 101}, []])
def test_batch_shape(body):
    assert fields_of(validate_batch, body)


def test_batch_of_100_is_accepted():
    assert len(validate_batch({"todos": [{"title": f"t{i}"} for i in range(100)]})) == 100


def test_batch_unknown_member():
    assert "extra" in fields_of(validate_batch, {"todos": [{"title": "t"}], "extra": 1})
