"""Sluice: routes only. Each reads identity and input, calls one object from chalicelib, answers.

Reads go to replicas; writes become commands on the write transport and answer 202; the S3 event
handler and the scheduled reconciler load delivered objects into the master.
"""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice, CognitoUserPoolAuthorizer, Rate, Response
from chalice.app import Request

from chalicelib import apigateway_extensions, observe, stage_guard
from chalicelib.bootstrap import services
from chalicelib.errors import ApiError, forbidden, validation_error
from chalicelib.http import (
    IDEMPOTENCY_KEY_MAX,
    accepted,
    check_id,
    check_size,
    decode_cursor,
    encode_cursor,
    etag_matches,
    guarded,
    parse_limit,
    parse_min_version,
    parse_state,
    query_value,
    raw_body,
    read_json,
    read_response,
)
from chalicelib.identity import Principal, principal_from_context
from chalicelib.models import Invalid, validate_batch, validate_profile, validate_todo

stage_guard.check()  # a stage without its infrastructure stops here (chalicelib/stage_guard.py)
app = Chalice(app_name="sluice")
# Under chalice's CLI: the document `chalice deploy` sends carries the gateway responses and each
# GET's cache key, so a plain deploy keeps them (chalicelib/apigateway_extensions.py).
apigateway_extensions.install(__name__)
app.api.binary_types = []  # every body is JSON text; raw bytes are checked as UTF-8 by us

LOCAL_POOL_ARN = "arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_localdev"
authorizer = CognitoUserPoolAuthorizer(
    "sluice-users", provider_arns=[os.environ.get("COGNITO_USER_POOL_ARN") or LOCAL_POOL_ARN]
)
ANY = ["*/*"]  # on every route: media types are checked by chalicelib.http, in the contract's order,
# and GETs ignore them (chalice's default would answer a GET with any other type 415)

if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # chalice local / test client only: answer as API Gateway does for bad tokens and unknown
    # paths, in the contract's error shape. Never imported in Lambda.
    from chalicelib import localdev

    localdev.install()

app.register_middleware(observe.http_middleware, "http")


def _request() -> Request:
    request = app.current_request
    assert request is not None, "only called while serving a request"
    return request


def _who() -> Principal:
    return principal_from_context(_request().context)


def _idempotency_key(fields: dict[str, list[str]]) -> str | None:
    key = _request().headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not all(" " <= ch <= "~" for ch in key):
        fields["Idempotency-Key"] = [f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"]
        return None
    return key


def _validated(validate: Any, body: Any, fields: dict[str, list[str]]) -> Any:
    try:
        value = validate(body)
    except Invalid as exc:
        fields.update(exc.fields)
        value = None
    if fields:
        raise validation_error(fields)
    return value


def _min_version(ctx: Any) -> int | None:
    """`min_version=V` (CONTRACT section 3), checked right after invalid_id: 400 invalid_query."""
    raw = query_value(_request(), "min_version")
    return None if raw is None else parse_min_version(raw, ctx.service.clock.now())  # the clock only when asked


def _post_input(validate: Any) -> tuple[Principal, Any, Any, str | None, int | None]:
    """A POST's caller, services, validated body, Idempotency-Key and min_version, checked in
    contract order (401, min_version, 413, 415, invalid_json, then the body's and the key's
    validation errors together)."""
    who = _who()
    ctx = services()
    min_version = _min_version(ctx)
    body = read_json(_request(), ctx.settings.max_body_bytes)
    fields: dict[str, list[str]] = {}
    key = _idempotency_key(fields)
    return who, ctx, _validated(validate, body, fields), key, min_version


@app.route("/health", methods=["GET"], content_types=ANY)
@guarded
def health() -> Response:
    return read_response({"status": "ok"}, 0)


@app.route("/openapi.json", methods=["GET"], content_types=ANY)
@guarded
def openapi() -> Response:
    from chalicelib.openapi import document

    return read_response(document(), 300)


@app.route("/todos", methods=["POST"], authorizer=authorizer, content_types=ANY)
@guarded
def create_todo() -> Response:
    who, ctx, data, key, min_version = _post_input(validate_todo)
    done = ctx.service.create_todo(who, data, key, min_version)
    return accepted(done.id, done.version, f"/todos/{done.id}")


@app.route("/todos/batch", methods=["POST"], authorizer=authorizer, content_types=ANY)
@guarded
def create_todos() -> Response:
    who, ctx, items, key, min_version = _post_input(validate_batch)
    done = ctx.service.create_todos(who, items, key, min_version)
    return Response(
        body={"accepted": [{"id": a.id, "version": a.version} for a in done]},
        status_code=202,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


@app.route("/todos", methods=["GET"], authorizer=authorizer, content_types=ANY)
@guarded
def list_todos() -> Response:
    who = _who()
    _min_version(services())  # checked, otherwise ignored (CONTRACT section 3)
    return _list(who.sub, own=True)


def _list(owner: str, own: bool = False) -> Response:
    request = _request()
    ctx = services()
    limit = parse_limit(query_value(request, "limit"))
    after = decode_cursor(query_value(request, "cursor"))
    state = parse_state(query_value(request, "state"))
    page = ctx.service.list_todos(owner, after, limit, state, own)
    cursor = encode_cursor(page.last_id) if page.last_id else None
    return read_response({"todos": page.rows, "next_cursor": cursor}, ctx.settings.cache_max_age)


@app.route("/todos/{todo_id}", methods=["GET"], authorizer=authorizer, content_types=ANY)
@guarded
def get_todo(todo_id: str) -> Response:
    who = _who()
    check_id(todo_id)
    ctx = services()
    row = ctx.service.get_todo(who.sub, todo_id, _min_version(ctx))
    etag = f'"{row["version"]}"'
    if etag_matches(_request().headers.get("if-none-match"), etag):
        return read_response("", ctx.settings.cache_max_age, etag, status=304)
    return read_response(row, ctx.settings.cache_max_age, etag)


@app.route("/todos/{todo_id}", methods=["PUT"], authorizer=authorizer, content_types=ANY)
@guarded
def put_todo(todo_id: str) -> Response:
    who = _who()
    check_id(todo_id)
    ctx = services()
    min_version = _min_version(ctx)
    body = read_json(_request(), ctx.settings.max_body_bytes)
    data = _validated(validate_todo, body, {})
    done = ctx.service.put_todo(who, todo_id, data, min_version)
    return accepted(done.id, done.version, f"/todos/{done.id}")


@app.route("/todos/{todo_id}", methods=["DELETE"], authorizer=authorizer, content_types=ANY)
@guarded
def delete_todo(todo_id: str) -> Response:
    who = _who()
    check_id(todo_id)
    ctx = services()
    min_version = _min_version(ctx)
    check_size(raw_body(_request()), ctx.settings.max_body_bytes)
    done = ctx.service.delete_todo(who, todo_id, min_version)
    return accepted(done.id, done.version, f"/todos/{done.id}")


@app.route("/me", methods=["GET"], authorizer=authorizer, content_types=ANY)
@guarded
def get_me() -> Response:
    who = _who()
    ctx = services()
    row = ctx.service.get_profile(who.sub, _min_version(ctx))
    return read_response(row, ctx.settings.cache_max_age, f'"{row["version"]}"')


@app.route("/me", methods=["PUT"], authorizer=authorizer, content_types=ANY)
@guarded
def put_me() -> Response:
    who = _who()
    ctx = services()
    min_version = _min_version(ctx)
    body = read_json(_request(), ctx.settings.max_body_bytes)
    data = _validated(validate_profile, body, {})
    done = ctx.service.put_profile(who, data, min_version)
    return accepted(done.id, done.version, "/me")


@app.route("/users/{sub}/todos", methods=["GET"], authorizer=authorizer, content_types=ANY)
@guarded
def admin_list_todos(sub: str) -> Response:
    who = _who()
    if not who.is_admin:
        raise forbidden()
    from urllib.parse import unquote

    owner = unquote(sub)
    if not 0 < len(owner) <= 128 or not owner.isprintable():
        raise ApiError(400, "invalid_id", "The user id is not valid.")
    return _list(owner)


# -- loading: S3 events and the reconciler (CONTRACT section 5) -----------------------------
WRITES_BUCKET = os.environ.get("WRITES_BUCKET") or "sluice-local-writes"


@app.on_s3_event(bucket=WRITES_BUCKET, prefix="writes/", events=["s3:ObjectCreated:*"], name="load_writes")
def load_writes(event: Any) -> dict[str, int]:
    from chalicelib.loader.events import handle_s3_event

    return handle_s3_event(event.to_dict(), services())


@app.schedule(Rate(15, unit=Rate.MINUTES), name="reconcile_writes")
def reconcile_writes(event: Any) -> dict[str, int]:
    """The scheduled walk; with the deploy's request (detail {"reconcile": "deferred"}), the
    deferred objects first (chalicelib/loader/reconciler.py)."""
    from chalicelib.loader.reconciler import reconcile_requested

    return reconcile_requested(event.to_dict(), services())


@app.lambda_function(name="migrate")
def migrate(event: Any, context: Any) -> dict[str, list[int]]:
    """Create or upgrade the master's schema from inside the VPC (the deploy step invokes it), on a
    connection that waits for a long ALTER as long as the function may still run."""
    from chalicelib.bootstrap import migrate_schema

    return {"applied": migrate_schema(context.get_remaining_time_in_millis() / 1000)}
