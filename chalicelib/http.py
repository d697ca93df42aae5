"""HTTP edges: reading requests safely and shaping every answer, errors included.

Check order on writes (CONTRACT section 3; chalicelib.routes runs them): 401, invalid_id (an
item's PUT and DELETE), invalid_query (`min_version`), 413, 415 (POST and PUT), invalid_json,
validation_error (the body's fields, and a POST's Idempotency-Key header's, together).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from chalice import Response
from chalice.app import handle_extra_types

from chalicelib.errors import (
    ApiError,
    DatabaseUnavailable,
    NotFound,
    RecordTooLarge,
    TransportUnavailable,
    Unavailable,
    invalid_id,
    invalid_query,
)
from chalicelib.ids import MAX_VERSION, MIN_VERSION_LEAD_US, is_canonical_uuid
from chalicelib.resources import TODOS, Collection, Rule

log = logging.getLogger("sluice.http")

JSON = "application/json"
_TODOS_PAGE = TODOS.collection or Collection()
LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = _TODOS_PAGE.limit_min, _TODOS_PAGE.limit_max, _TODOS_PAGE.limit_default
CURSOR_MAX = 200  # characters of a cursor this API gives
IDEMPOTENCY_KEY_MAX = 128  # printable ASCII characters of an Idempotency-Key
OWS = " \t"  # HTTP's optional whitespace; str.strip() would also take U+00A0, U+3000 and the like


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return body


def error_response(exc: ApiError) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, "Cache-Control": "no-store", **exc.headers}
    return Response(body=error_body(exc.code, exc.message, exc.fields), status_code=exc.status, headers=headers)


def guarded(view: Callable[..., Response]) -> Callable[..., Response]:
    """Turn the project's exceptions into answers; anything unexpected is a bare 500."""

    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except ApiError as exc:
            return error_response(exc)
        except NotFound as exc:
            return error_response(ApiError(404, "not_found", str(exc)))
        except Unavailable as exc:
            return error_response(ApiError(503, "unavailable", str(exc), headers={"Retry-After": str(exc.retry_after)}))
        except DatabaseUnavailable as exc:
            log.warning("database unavailable: %s", exc)
            return error_response(
                ApiError(
                    503, "unavailable", "The database is unavailable; try again shortly.", headers={"Retry-After": "5"}
                )
            )
        except TransportUnavailable as exc:
            log.warning("write transport unavailable: %s", exc)
            return error_response(
                ApiError(
                    503,
                    "unavailable",
                    "The write could not be confirmed; retry it (a POST with the same Idempotency-Key).",
                    headers={"Retry-After": "2"},
                )
            )
        except RecordTooLarge as exc:
            log.warning("write too large for one record: %s", exc)
            return error_response(ApiError(413, "payload_too_large", "The write is too large to travel as one record."))
        except Exception:
            log.exception("unhandled error")
            return error_response(ApiError(500, "internal_error", "Something went wrong on our side."))

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def check_id(value: str) -> str:
    if not is_canonical_uuid(value):
        raise invalid_id()
    return value


def raw_body(request: Any) -> bytes:
    body = request.raw_body
    if isinstance(body, str):
        return body.encode("utf-8")
    return body or b""


def check_size(body: bytes, limit: int) -> None:
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")


def check_json_media_type(headers: Any) -> None:
    raw = headers.get("content-type") if headers is not None else None
    if raw == JSON:  # the common case, decided by one comparison
        return
    if not raw:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    media, _, params = raw.partition(";")
    if media.strip(OWS).lower() != JSON:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip(OWS).lower() == "charset" and value.strip(OWS).strip('"').lower() not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", "JSON bodies must be UTF-8.")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


# Built once: json.loads with these options would build a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def parse_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", "The body is not valid UTF-8.") from exc
    try:
        if text.startswith("\ufeff"):  # as json.loads does for a str
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "The body is nested too deeply.") from exc
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {str(exc)[:120]}") from exc


def read_json(request: Any, limit: int) -> Any:
    """413, then 415, then invalid_json: the body of a POST or PUT."""
    body = raw_body(request)
    check_size(body, limit)
    check_json_media_type(request.headers)
    return parse_json(body)


def query_value(request: Any, name: str) -> str | None:
    params = request.query_params
    if not params or name not in params:
        return None
    values = params.getlist(name)
    if len(values) != 1:
        raise invalid_query(f"Give {name} once.")
    return str(values[0])


def parse_limit(raw: str | None, collection: Collection | None = None) -> int:
    """A page's `limit`, within the collection's declared bounds (the todos' by default)."""
    low, high, default = (
        (LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT)
        if collection is None
        else (collection.limit_min, collection.limit_max, collection.limit_default)
    )
    if raw is None:
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 4 or not low <= int(raw) <= high:
        raise invalid_query(f"limit must be an integer from {low} to {high}.")
    return int(raw)


def parse_filter(name: str, rule: Rule, raw: str | None) -> str | None:
    """A page's filter on a declared field (`?state=`, `?list_id=`): a value the field can hold,
    or 400 invalid_query. Choice fields take one of their choices, uuid fields a canonical UUID."""
    if raw is None:
        return None
    if rule.kind == "choice":
        if raw not in rule.choices:
            raise invalid_query(f"{name} must be " + " or ".join(repr(choice) for choice in rule.choices) + ".")
    elif rule.kind == "uuid":
        if not is_canonical_uuid(raw):
            raise invalid_query(f"{name} must be a canonical UUID (lowercase, hyphenated).")
    else:
        raise ValueError(f"{name}: a {rule.kind} field is not a filter")
    return raw


def parse_min_version(raw: str | None, now_us: int) -> int | None:
    """`min_version=V` (CONTRACT section 3): a positive integer below 2^53 in ASCII digits, at most
    5 s ahead of the service's clock `now_us`; otherwise 400 invalid_query."""
    if raw is None:
        return None
    if not raw or len(raw) > 16 or not raw.isascii() or not raw.isdigit():
        raise invalid_query("min_version must be a version this API gave (a positive integer).")
    value = int(raw)
    if not 0 < value <= MAX_VERSION:
        raise invalid_query("min_version must be a positive integer below 2^53.")
    if value > now_us + MIN_VERSION_LEAD_US:
        raise invalid_query("min_version is ahead of the service's clock; send a version this API gave.")
    return value


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


_CURSOR = re.compile(rf"[A-Za-z0-9_-]{{1,{CURSOR_MAX}}}")


def decode_cursor(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        if _CURSOR.fullmatch(raw) is None:  # base64url as encode_cursor writes it, nothing else
            raise ValueError("bad cursor")
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8"))
        after = data["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_query("cursor is not one this API gave.") from exc
    if not is_canonical_uuid(after):
        raise invalid_query("cursor is not one this API gave.")
    return str(after)


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip(OWS) == "*":
        return True
    for candidate in header.split(","):
        tag = candidate.strip(OWS)
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


# What chalice's Response.to_dict would do with a body that is not text (json.dumps with these
# options), with one encoder built once: json.dumps builds a new JSONEncoder on every call.
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"), default=handle_extra_types)
# The C encoder `_BODY_ENCODER.encode` builds on every call, built once (same options, same text;
# no circular-reference markers: an answer's body is a tree of decoded rows, never a cycle).
_C_ENCODE = getattr(json.encoder, "c_make_encoder", None)
_BODY_ITERENCODE = (
    _C_ENCODE(None, handle_extra_types, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    if _C_ENCODE is not None
    else None
)


def encode_body(body: Any) -> str:
    """`body` as chalice's Response.to_dict writes a body that is not text (`_BODY_ENCODER`)."""
    if _BODY_ITERENCODE is None or isinstance(body, str):
        return _BODY_ENCODER.encode(body)
    return "".join(_BODY_ITERENCODE(body, 0))


class TextResponse(Response):
    """A Response whose `to_dict` skips chalice's binary check when it cannot apply: with no
    binary types (the app sets none), chalice base64-encodes a body only when its Content-Type
    holds "*/*"; a text body with plain string headers none of which holds "*/*" is answered as
    chalice would, without building a case-insensitive copy of the headers and matching types."""

    def to_dict(self, binary_types: list[str] | None = None) -> dict[str, Any]:
        body, headers = self.body, self.headers
        if binary_types or not isinstance(body, str):
            return super().to_dict(binary_types)
        for value in headers.values():
            if type(value) is not str or "*/*" in value:
                return super().to_dict(binary_types)
        return {"headers": dict(headers), "multiValueHeaders": {}, "statusCode": self.status_code, "body": body}


def read_response(body: Any, max_age: int, etag: str | None = None, status: int = 200) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, "Cache-Control": f"private, max-age={max_age}"}
    if etag is not None:
        headers["ETag"] = etag
    if not isinstance(body, (str, bytes)):
        body = encode_body(body)
    return TextResponse(body=body, status_code=status, headers=headers)


_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (ensure_ascii)


def accepted(id_: str, version: int, location: str | None) -> Response:
    """202 with {"id", "version", "status": "accepted"}, its text written here: the same bytes
    chalice's json.dumps of that dict gives, without encoding a dict on every write."""
    headers: dict[str, str | list[str]] = {"Content-Type": JSON, "Cache-Control": "no-store"}
    if location:
        headers["Location"] = location
    body = '{"id":' + _json_str(id_) + ',"version":' + int.__repr__(version) + ',"status":"accepted"}'
    return TextResponse(body=body, status_code=202, headers=headers)
