"""The routes of the declared resources, derived from their declarations (app.py stays thin).

A resource keyed by (owner, id) with a `collection` gets (CONTRACT section 3):
- `POST {path}` (create; `Idempotency-Key` derives the id) and `GET {path}` (a page: `limit`,
  `cursor`, its declared filters, `min_version` checked);
- `GET`, `PUT`, `DELETE {path}/{<singular>_id}` (ETag and 304 on GET);
- `POST {path}/batch` when it declares `batch`, `GET /users/{sub}{path}` when it declares `admin`.
A resource with one row per owner gets `GET` and `PUT {path}` (the profile, at /me).

Each view reads identity and input in the contract's check order (401, `invalid_id`,
`min_version`, 413, 415, `invalid_json`, `validation_error`), makes one call of the service and
shapes the answer. Views are named as the routes were when written by hand (`get_todo`,
`list_todos`, `put_me`, ...), and each names the query parameters it reads
(`view.query_parameters`: the deploy's cache keys, deploy/routes.py); a view reads no other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from chalice import Chalice, Response
from chalice.app import Request

from chalicelib.bootstrap import Services, services
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
    parse_filter,
    parse_limit,
    parse_min_version,
    query_value,
    raw_body,
    read_json,
    read_response,
)
from chalicelib.identity import MAX_SUB_CHARS, Principal, principal_from_context
from chalicelib.resources import RESOURCES, Resource

View = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    view: View
    authorized: bool = True


class Views:
    """The views of one app: they read its current request."""

    def __init__(self, app: Chalice) -> None:
        self.app = app

    # -- reading a request, in the contract's order ----------------------------------------------
    def request(self) -> Request:
        request = self.app.current_request
        assert request is not None, "only called while serving a request"
        return request

    def who(self) -> Principal:
        return principal_from_context(self.request().context)

    def query(self, allowed: tuple[str, ...], name: str) -> str | None:
        """A query parameter the view declared (`view.query_parameters`); reading another is a bug."""
        if name not in allowed:
            raise AssertionError(f"{name} is not among the view's query parameters {allowed}")
        return query_value(self.request(), name)

    def min_version(self, ctx: Services) -> int | None:
        """`min_version=V` (CONTRACT section 3), checked right after invalid_id: 400 invalid_query."""
        raw = query_value(self.request(), "min_version")
        return None if raw is None else parse_min_version(raw, ctx.service.clock.now())

    def idempotency_key(self, fields: dict[str, list[str]]) -> str | None:
        key = self.request().headers.get("idempotency-key")
        if key is None:
            return None
        if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not all(" " <= ch <= "~" for ch in key):
            fields["Idempotency-Key"] = [f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"]
            return None
        return key

    def post(self, validate: Callable[[Any], Any]) -> tuple[Principal, Services, Any, str | None, int | None]:
        """A POST's caller, services, validated body, Idempotency-Key and min_version, checked in
        contract order (401, min_version, 413, 415, invalid_json, then the body's and the key's
        validation errors together)."""
        who = self.who()
        ctx = services()
        min_version = self.min_version(ctx)
        fields: dict[str, list[str]] = {}
        key = self.idempotency_key(fields)
        return who, ctx, self.body(ctx, validate, fields), key, min_version

    def body(self, ctx: Services, validate: Callable[[Any], Any], fields: dict[str, list[str]] | None = None) -> Any:
        """413, 415, invalid_json, then the body's validation errors (with `fields`, the header's)."""
        body = read_json(self.request(), ctx.settings.max_body_bytes)
        try:
            value = validate(body)
        except _models().Invalid as exc:
            raise validation_error({**(fields or {}), **exc.fields}) from None
        if fields:
            raise validation_error(dict(fields))
        return value


_MODELS: list[ModuleType] = []


def _models() -> ModuleType:
    """chalicelib.models (the validators), imported by the first write, then kept: a GET never
    needs it, and a write does not pay an import statement per request."""
    if not _MODELS:
        from chalicelib import models

        _MODELS.append(models)
    return _MODELS[0]


def _named(view: View, name: str, query: Iterable[str] = ()) -> View:
    wrapped = guarded(view)
    wrapped.__name__ = wrapped.__qualname__ = name
    wrapped.query_parameters = tuple(sorted(query))  # type: ignore[attr-defined]
    return wrapped


class CollectionViews:
    """The views of one resource keyed by (owner, id): create, page, get, put, delete and the
    admin's page, each reading the app's current request through `views`."""

    def __init__(self, views: Views, resource: Resource) -> None:
        collection = resource.collection
        assert collection is not None and resource.by_id
        self.views, self.collection = views, collection
        self.name, self.path = resource.name, resource.path
        self.id_param = f"{resource.singular}_id"
        self.rules = resource.rules()
        self.page_query = ("limit", "cursor", *collection.filters)

    def validate(self, body: Any) -> Any:
        return _models().VALIDATORS[self.name](body)

    def location(self, id_: str) -> str:
        return f"{self.path}/{id_}"

    def create(self) -> Response:
        who, ctx, data, key, min_version = self.views.post(self.validate)
        done = ctx.service.create(self.name, who, data, key, min_version)
        return accepted(done.id, done.version, self.location(done.id))

    def filters(self) -> dict[str, Any]:
        """The page's declared filters the request names, parsed."""
        filters = {}
        for field in self.collection.filters:
            value = parse_filter(field, self.rules[field], self.views.query(self.page_query, field))
            if value is not None:
                filters[field] = value
        return filters

    def page(self, owner: str, own: bool) -> Response:
        ctx = services()
        limit = parse_limit(self.views.query(self.page_query, "limit"), self.collection)
        after = decode_cursor(self.views.query(self.page_query, "cursor"))
        done = ctx.service.list_rows(self.name, owner, after, limit, self.filters(), own)
        cursor = encode_cursor(done.last_id) if done.last_id else None
        return read_response({self.name: done.rows, "next_cursor": cursor}, ctx.settings.cache_max_age)

    def list_own(self) -> Response:
        who = self.views.who()
        self.views.min_version(services())  # checked, otherwise ignored (CONTRACT section 3)
        return self.page(who.sub, own=True)

    def admin_list(self, sub: str) -> Response:
        who = self.views.who()
        if not who.is_admin:
            raise forbidden()
        owner = unquote(sub)
        if not 0 < len(owner) <= MAX_SUB_CHARS or not owner.isprintable():
            raise ApiError(400, "invalid_id", "The user id is not valid.")
        return self.page(owner, own=False)

    def get(self, **params: str) -> Response:
        who = self.views.who()
        id_ = check_id(params[self.id_param])
        ctx = services()
        row = ctx.service.get(self.name, who.sub, id_, self.views.min_version(ctx))
        etag = f'"{row["version"]}"'
        if etag_matches(self.views.request().headers.get("if-none-match"), etag):
            return read_response("", ctx.settings.cache_max_age, etag, status=304)
        return read_response(row, ctx.settings.cache_max_age, etag)

    def put(self, **params: str) -> Response:
        who = self.views.who()
        id_ = check_id(params[self.id_param])
        ctx = services()
        min_version = self.views.min_version(ctx)
        data = self.views.body(ctx, self.validate)
        done = ctx.service.put(self.name, who, id_, data, min_version)
        return accepted(done.id, done.version, self.location(done.id))

    def delete(self, **params: str) -> Response:
        who = self.views.who()
        id_ = check_id(params[self.id_param])
        ctx = services()
        min_version = self.views.min_version(ctx)
        check_size(raw_body(self.views.request()), ctx.settings.max_body_bytes)
        done = ctx.service.delete(self.name, who, id_, min_version)
        return accepted(done.id, done.version, self.location(done.id))


def collection_routes(views: Views, resource: Resource) -> list[Route]:
    """The routes of a resource keyed by (owner, id)."""
    made = CollectionViews(views, resource)
    name, noun, path = resource.name, resource.singular, resource.path
    item = f"{path}/{{{noun}_id}}"
    routes = [
        Route(path, "POST", _named(made.create, f"create_{noun}")),
        Route(path, "GET", _named(made.list_own, f"list_{name}", (*made.page_query, "min_version"))),
        Route(item, "GET", _named(made.get, f"get_{noun}", ("min_version",))),
        Route(item, "PUT", _named(made.put, f"put_{noun}")),
        Route(item, "DELETE", _named(made.delete, f"delete_{noun}")),
    ]
    if made.collection.batch:
        routes.append(Route(f"{path}/batch", "POST", _named(_batch(views, resource), f"create_{name}")))
    if made.collection.admin:
        admin = _named(made.admin_list, f"admin_list_{name}", made.page_query)
        routes.append(Route(f"/users/{{sub}}{path}", "GET", admin))
    return routes


def _batch(views: Views, resource: Resource) -> View:
    """`POST {path}/batch`: 1 to `batch` items, validated as a whole, one record."""
    name = resource.name

    def create_many() -> Response:
        who, ctx, items, key, min_version = views.post(lambda body: _models().validate_batch(body, name))
        done = ctx.service.create_many(name, who, items, key, min_version)
        return Response(
            body={"accepted": [{"id": a.id, "version": a.version} for a in done]},
            status_code=202,
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    return create_many


def owner_routes(views: Views, resource: Resource) -> list[Route]:
    """The routes of a resource with one row per owner: GET and PUT on its path."""
    name, path = resource.name, resource.path
    label = path.strip("/").replace("/", "_")

    def validate(body: Any) -> Any:
        return _models().VALIDATORS[name](body)

    def get() -> Response:
        who = views.who()
        ctx = services()
        row = ctx.service.get(name, who.sub, who.sub, views.min_version(ctx))
        return read_response(row, ctx.settings.cache_max_age, f'"{row["version"]}"')

    def put() -> Response:
        who = views.who()
        ctx = services()
        min_version = views.min_version(ctx)
        data = views.body(ctx, validate)
        done = ctx.service.put(name, who, who.sub, data, min_version)
        return accepted(done.id, done.version, path)

    return [
        Route(path, "GET", _named(get, f"get_{label}", ("min_version",))),
        Route(path, "PUT", _named(put, f"put_{label}")),
    ]


def install(app: Chalice, authorizer: Any, content_types: list[str]) -> None:
    """Register every declared resource's routes on `app`, behind `authorizer`."""
    views = Views(app)
    for resource in RESOURCES.values():
        routes = collection_routes(views, resource) if resource.collection else owner_routes(views, resource)
        for route in routes:
            app.route(route.path, methods=[route.method], authorizer=authorizer, content_types=content_types)(
                route.view
            )
