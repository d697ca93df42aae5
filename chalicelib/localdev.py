"""Local only (chalice local and chalice's test client): make the emulated gateway answer like
the production one that `make deploy` configures.

Chalice's LocalGateway crashes the request on a token that is not a JWT, and answers unknown
paths in API Gateway's own shape. In production, API Gateway answers both (401 for a bad token,
403 "Missing Authentication Token" for an unknown path) with the gateway responses the deploy step
sets, in the contract's error shape. A method a path does not have (HEAD, PATCH, OPTIONS: no route
declares CORS, so the API has no OPTIONS methods; any other name) is the same "Missing
Authentication Token" to API Gateway, so `404 not_found` before any token is looked at, where
chalice local answers OPTIONS 200 without a token, HEAD and PATCH 405 and unknown methods 501 in
HTML. This module patches LocalGateway.handle_request, and chalice local's request handler for
methods it has no `do_` handler for, to answer as production does. It is imported only when the
process is not running in Lambda.
"""

from __future__ import annotations

import json
from typing import Any

_installed = False


def _body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


def _no_such_path_class() -> Any:
    from chalice import local

    class NoSuchPathError(local.LocalGatewayException):
        CODE = 404

    return NoSuchPathError


NoSuchPath: Any = None


def _path_lacks_method(gateway: Any, method: str, path: str, headers: Any, body: Any) -> bool:
    """True when `path` is one of the app's routes but `method` is not one of its methods."""
    try:
        event = gateway.event_converter.create_lambda_event(method=method, path=path, headers=headers, body=body)
    except Exception:  # noqa: BLE001 - not a route, or not parseable: the original handler answers
        return False
    methods = gateway._app_object.routes.get(event["requestContext"]["resourcePath"], {})
    return method not in methods


def _any_method(handler_class: Any) -> None:
    """chalice local's handler serves every method name through its generic handler (the standard
    library answers 501 in HTML to a method that has no `do_` attribute), and answers HEAD without
    a body, as HTTP wants (a body the client never reads breaks its keep-alive connection)."""
    generic = handler_class._generic_handle
    with_body = handler_class._send_http_response_with_body

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("do_"):
            return generic.__get__(self, type(self))
        raise AttributeError(name)

    def send_with_body(self: Any, code: int, headers: Any, body: Any) -> None:
        if self.command != "HEAD":
            with_body(self, code, headers, body)
            return
        self.send_response(code)
        self.send_header("Content-Length", str(len(body.encode() if isinstance(body, str) else body)))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self._send_headers(headers)

    handler_class.__getattr__ = __getattr__
    handler_class._send_http_response_with_body = send_with_body


def install() -> None:
    global _installed, NoSuchPath
    if _installed:
        return
    from chalice import local

    NoSuchPath = _no_such_path_class()
    _any_method(local.ChaliceRequestHandler)

    original = local.LocalGateway.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        if _path_lacks_method(self, method, path, headers, body):
            raise NoSuchPath({"Content-Type": "application/json"}, _body("not_found", "No such path."))
        try:
            return original(self, method, path, headers, body)
        except local.ForbiddenError as exc:
            headers = {**(exc.headers or {}), "Content-Type": "application/json"}
            if b"Missing Authentication" in (exc.body or b"") or b"Credential" in (exc.body or b""):
                raise NoSuchPath(headers, _body("not_found", "No such path.")) from None
            exc.body = _body("forbidden", "You are not allowed to do this.")
            exc.headers = headers
            raise
        except local.LocalGatewayException as exc:
            exc.body = _body("unauthorized", "A valid identity token is required.")
            exc.headers = {**(exc.headers or {}), "Content-Type": "application/json"}
            raise
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            # A token that is not a JWT: API Gateway's Cognito authorizer answers 401.
            raise local.NotAuthorizedError(
                {"Content-Type": "application/json"}, _body("unauthorized", "A valid identity token is required.")
            ) from None

    local.LocalGateway.handle_request = handle_request  # type: ignore[method-assign]
    _installed = True
