"""Local only (chalice local and chalice's test client): make the emulated gateway answer like
the production one that `make deploy` configures.

Chalice's LocalGateway crashes the request on a token that is not a JWT, and answers unknown
paths in API Gateway's own shape. In production, API Gateway answers both (401 for a bad token,
403 for an unknown path) with the gateway responses the deploy step sets, in the contract's
error shape. This module patches LocalGateway.handle_request to do the same. It is imported only
when the process is not running in Lambda.
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


def install() -> None:
    global _installed, NoSuchPath
    if _installed:
        return
    from chalice import local

    NoSuchPath = _no_such_path_class()

    original = local.LocalGateway.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
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
