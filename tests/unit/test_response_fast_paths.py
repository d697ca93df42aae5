"""The per-request shortcuts of a GET's answer give what chalice would: the body's JSON text
(`encode_body`), `TextResponse.to_dict`, the app's binary-answer check, and the kept Principal."""

from __future__ import annotations

import decimal
import itertools
import json
from typing import Any

import pytest
from chalice import Response
from chalice.app import CaseInsensitiveMapping, RestAPIEventHandler, handle_extra_types

from chalicelib import identity
from chalicelib.http import TextResponse, encode_body, read_response

BODIES: list[Any] = [
    {"id": "a", "title": 'é\u2028\x00"\\', "done": False, "version": 12, "tags": ["x", "ü"], "due": None},
    {"n": 1.5, "big": 1e300, "neg": -0.0, "dec": decimal.Decimal("1.10"), "nested": {"a": [[], {}]}},
    [1, 2, {"k": True}],
    "text",
    7,
    None,
]


@pytest.mark.parametrize("body", BODIES)
def test_encode_body_is_chalices_text(body: Any) -> None:
    assert encode_body(body) == _chalice_json(body)


def _chalice_json(body: Any) -> str:
    """What chalice's Response.to_dict does with a body that is not text."""
    return json.dumps(body, separators=(",", ":"), default=handle_extra_types)


def test_encode_body_fails_as_the_encoder_does() -> None:
    for bad in ({"x": object()}, {"x": float("nan"), 1: {1, 2}}):
        with pytest.raises(TypeError):
            _chalice_json(bad)
        with pytest.raises(TypeError):
            encode_body(bad)


HEADER_SETS: list[dict[str, Any]] = [
    {"Content-Type": "application/json", "Cache-Control": "private, max-age=5", "ETag": '"3"'},
    {"Content-Type": "*/*"},
    {"content-type": "text/plain", "X": ["a", "b"]},
    {"Content-Type": "application/json; charset=*/*"},
    {},
]


@pytest.mark.parametrize(
    ("headers", "body", "binary"),
    list(itertools.product(HEADER_SETS, ['{"a":1}', "", {"a": 1}], [[], None, ["*/*"], ["application/json"]])),
)
def test_text_response_to_dict_is_chalices(headers: dict[str, Any], body: Any, binary: list[str] | None) -> None:
    ours, theirs = (
        _outcome(kind(body=body, headers=dict(headers), status_code=201), binary) for kind in (TextResponse, Response)
    )
    assert ours == theirs
    assert list(ours) == list(theirs)


def _outcome(response: Response, binary: list[str] | None) -> Any:
    try:
        return response.to_dict(binary)
    except ValueError as exc:  # chalice's own refusal of a text body with a binary type
        return {"raised": str(exc)}


def test_read_response_to_dict() -> None:
    answer = read_response({"x": "é"}, 5, '"3"').to_dict([])
    assert answer == {
        "headers": {"Content-Type": "application/json", "Cache-Control": "private, max-age=5", "ETag": '"3"'},
        "multiValueHeaders": {},
        "statusCode": 200,
        "body": '{"x":"\\u00e9"}',
    }


class _Api:
    def __init__(self, binary_types: list[str]) -> None:
        self.binary_types = binary_types


@pytest.mark.parametrize("binary", [[], ["application/octet-stream"], ["*/*"]])
def test_binary_check_is_chalices(binary: list[str]) -> None:
    import app

    types = [None, "application/json", "*/*", "text/plain, */*;q=0.1", "application/octet-stream", "APPLICATION/JSON"]
    for accept, content_type in itertools.product(types, types):
        request = CaseInsensitiveMapping({} if accept is None else {"Accept": accept})
        response = CaseInsensitiveMapping({} if content_type is None else {"Content-Type": content_type})
        ours = app._RestHandler({}, _Api(binary), None, False)  # type: ignore[arg-type]
        theirs = RestAPIEventHandler({}, _Api(binary), None, False)  # type: ignore[arg-type]
        assert ours._validate_binary_response(request, response) == theirs._validate_binary_response(
            request, response
        ), (accept, content_type)


def test_principal_is_kept_and_still_checked() -> None:
    context = {"authorizer": {"claims": {"sub": "user-1", "cognito:groups": "admins,b"}}}
    first = identity.principal_from_context(context)
    again = identity.principal_from_context(context)
    assert again is first and first == identity.Principal("user-1", frozenset({"admins", "b"}))
    listed = {"authorizer": {"claims": {"sub": "user-1", "cognito:groups": ["b"]}}}
    assert identity.principal_from_context(listed).groups == frozenset({"b"})
    plain = {"authorizer": {"claims": {"sub": "user-1"}}}
    assert identity.principal_from_context(plain).groups == frozenset()
    for bad in (" user-1", "", "x" * 129, "a\nb"):
        for _ in range(2):
            with pytest.raises(Exception) as raised:
                identity.principal_from_context({"authorizer": {"claims": {"sub": bad}}})
            assert getattr(raised.value, "status", None) == 401
