"""The API's routes as the deploy step needs them, derived from the Chalice app (never a hand list).

A shared cache of a GET must key it on everything its answer depends on: the caller
(`Authorization`), the path parameters, the query parameters it reads, and `If-None-Match` (the
app answers 304 with an empty body to a matching tag). `cache_key_parameters` names them in API
Gateway's terms: the document `chalice deploy` sends declares them for every GET
(chalicelib/apigateway_extensions.py), and `deploy.apigateway` checks them on the deployed API
before it turns API Gateway's stage cache on (off by default; CloudFront caches nothing).

Path parameters come from Chalice's route table. Query parameters are those a view derived from a
resource's declaration names (`view.query_parameters`, chalicelib/routes.py, which reads only
those), and otherwise are read from the source: the names passed as literals to
`chalicelib.http.query_value(request, NAME)` in the view and in every project function it calls by
name. Reading `.query_params` any other way is refused, so a new query parameter can never be
left out of the cache key silently.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

AUTHORIZATION = "method.request.header.Authorization"
IF_NONE_MATCH = "method.request.header.If-None-Match"
READ_METHODS = frozenset({"GET"})
PROJECT_PACKAGES = ("chalicelib",)


class RouteError(ValueError):
    """The routes cannot be analysed safely (the deploy step stops rather than guess)."""


@dataclass(frozen=True)
class Route:
    path: str  # as Chalice and API Gateway write it: /todos/{todo_id}
    method: str
    view_name: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    authorized: bool

    @property
    def is_read(self) -> bool:
        return self.method in READ_METHODS

    def cache_key_parameters(self) -> tuple[str, ...]:
        """Every method request parameter the cache key of this GET must hold."""
        return (
            AUTHORIZATION,
            IF_NONE_MATCH,
            *(f"method.request.path.{name}" for name in self.path_params),
            *(f"method.request.querystring.{name}" for name in self.query_params),
        )

    @staticmethod
    def required(parameter: str) -> bool:
        """API Gateway's `required` flag: path parameters always are; headers and queries not."""
        return parameter.startswith("method.request.path.")


def routes_of(module: ModuleType, queries: bool = True) -> list[Route]:
    """Every (path, method) of the Chalice app `module.app`, sorted; query parameters for reads.

    With `queries=False` no source is read: enough for throttles per route, while the stage
    cache is off."""
    app = module.app
    out = []
    for path, methods in sorted(app.routes.items()):
        for method, entry in sorted(methods.items()):
            query = view_queries(module, entry) if queries and method in READ_METHODS else ()
            out.append(
                Route(
                    path=path,
                    method=method,
                    view_name=entry.view_name,
                    path_params=tuple(entry.view_args),
                    query_params=query,
                    authorized=entry.authorizer is not None,
                )
            )
    return out


def function_names(module: ModuleType) -> set[str]:
    """The Lambda functions Chalice makes for the app (`api_handler` for the routes)."""
    app = module.app
    names = {"api_handler"} if app.routes else set()
    names.update(source.name for source in app.event_sources)
    names.update(function.name for function in app.pure_lambda_functions)
    return names


# -- query parameters ---------------------------------------------------------------------------
def view_queries(module: ModuleType, entry: Any) -> tuple[str, ...]:
    """The query parameters a route's view reads: those a view derived from a declaration names
    itself (`view.query_parameters`, chalicelib/routes.py: it reads no other), else those its
    source reads."""
    declared = getattr(entry.view_function, "query_parameters", None)
    if declared is not None:
        return tuple(sorted(declared))
    return query_parameters(module, entry.view_name)


def _sink() -> Any:
    from chalicelib.http import query_value

    return query_value


@cache
def _module_tree(module_name: str) -> ast.Module:
    module = sys.modules[module_name]
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError) as exc:
        raise RouteError(f"cannot read the source of {module_name}") from exc
    return ast.parse(source)


def _function_def(module: ModuleType, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    for node in _module_tree(module.__name__).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    raise RouteError(f"cannot find the definition of {module.__name__}.{name}")


def _resolve(module: ModuleType, expr: ast.expr) -> Any:
    """The object a called name (`f` or `pkg.f`) refers to in `module`, or None."""
    if isinstance(expr, ast.Name):
        return getattr(module, expr.id, None)
    if isinstance(expr, ast.Attribute):
        owner = _resolve(module, expr.value)
        if isinstance(owner, ModuleType):
            return getattr(owner, expr.attr, None)
    return None


def _is_project_function(value: Any, app_module: str) -> bool:
    if not inspect.isfunction(value):
        return False
    owner = value.__module__ or ""
    return owner == app_module or owner.split(".")[0] in PROJECT_PACKAGES


def _literal_name(call: ast.Call) -> str:
    candidates = [kw.value for kw in call.keywords if kw.arg == "name"]
    if len(call.args) >= 2:
        candidates.append(call.args[1])
    if len(candidates) == 1 and isinstance(candidates[0], ast.Constant) and isinstance(candidates[0].value, str):
        return candidates[0].value
    raise RouteError(f"query_value at line {call.lineno} must name its parameter with a string literal")


def query_parameters(module: ModuleType, function_name: str) -> tuple[str, ...]:
    """The query parameters a view reads, directly or through project functions it calls."""
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()
    sink = _sink()

    def walk(owner: ModuleType, name: str) -> None:
        if (owner.__name__, name) in seen:
            return
        seen.add((owner.__name__, name))
        node = _function_def(owner, name)
        for inner in ast.walk(node):
            if isinstance(inner, ast.Attribute) and inner.attr == "query_params":
                raise RouteError(
                    f"{owner.__name__}.{name} reads request.query_params directly (line {inner.lineno}); "
                    "use chalicelib.http.query_value so the parameter is known to be part of a cached GET's key"
                )
            if not isinstance(inner, ast.Call):
                continue
            target = _resolve(owner, inner.func)
            if target is sink:
                found.add(_literal_name(inner))
            elif _is_project_function(target, module.__name__):
                walk(sys.modules[target.__module__], target.__name__)

    walk(module, function_name)
    return tuple(sorted(found))
