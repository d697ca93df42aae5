from __future__ import annotations

import pytest

from chalicelib.errors import ApiError
from chalicelib.identity import parse_groups, principal_from_context


@pytest.mark.parametrize(
    ("raw", "groups"),
    [
        (["admins"], {"admins"}),
        ("admins", {"admins"}),
        ("a,admins", {"a", "admins"}),
        ("[a admins]", {"a", "admins"}),
        ("[admins]", {"admins"}),
        ("", set()),
        (None, set()),
        (7, set()),
    ],
)
def test_groups_as_chalice_local_and_production_send_them(raw, groups):
    assert parse_groups(raw) == groups


@pytest.mark.parametrize("raw", ["Admins", "admins2", "notadmins", "[admins2]", "admin"])
def test_group_names_match_exactly(raw):
    assert "admins" not in parse_groups(raw)


def test_principal_from_claims():
    who = principal_from_context({"authorizer": {"claims": {"sub": "abc", "cognito:groups": "admins"}}})
    assert who.sub == "abc" and who.is_admin


@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"authorizer": None},
        {"authorizer": {"claims": {}}},
        {"authorizer": {"claims": {"sub": ""}}},
        {"authorizer": {"claims": {"sub": 5}}},
        {"authorizer": {"claims": {"sub": "x" * 129}}},
        {"authorizer": {"claims": {"sub": "a\nb"}}},
        {"authorizer": {"principalId": "alice"}},
    ],
)
def test_no_usable_sub_is_401(context):
    with pytest.raises(ApiError) as info:
        principal_from_context(context)
    assert info.value.status == 401
