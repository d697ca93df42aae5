"""moto's server, with two stand-ins for what API Gateway does and moto does not:

1. A deployment to an existing stage keeps the stage's settings. API Gateway's CreateDeployment
   with a stageName that exists points that stage at the new deployment; the stage's cache
   cluster, method settings (caching, throttling) and tracing stay. moto replaces the stage with
   a new one, which would hide exactly what tests/deploy/test_emulated_deploy.py checks: what a
   plain `chalice deploy` leaves in the stage settings.
2. Importing a document (`import_rest_api`, `put_rest_api`) reads, as API Gateway does, the
   gateway responses at its root (`x-amazon-apigateway-gateway-responses`), each method's
   declared `parameters` (its method request parameters) and its integration's
   `cacheKeyParameters`; and in overwrite mode the document is the whole API, so gateway
   responses it does not name go back to API Gateway's defaults. moto drops all three and keeps
   the API's gateway responses on overwrite, which hid that a plain `chalice deploy` reset them.
"""

from __future__ import annotations

import sys
from typing import Any

GATEWAY_RESPONSES = "x-amazon-apigateway-gateway-responses"
INTEGRATION = "x-amazon-apigateway-integration"
PLACES = {"header": "header", "query": "querystring", "path": "path"}  # a parameter's `in` -> method.request.<place>


def install() -> None:
    from moto.apigateway import models

    original = models.RestAPI.create_deployment

    def create_deployment(self: Any, name: str, description: str, stage_variables: Any = None) -> Any:
        existing = self.stages.get(name) if name else None
        deployment = original(self, name, description, stage_variables)
        if existing is not None:
            existing.deployment_id = deployment.id
            self.stages[name] = existing
        return deployment

    models.RestAPI.create_deployment = create_deployment

    imported = models.APIGatewayBackend.put_rest_api

    def put_rest_api(
        self: Any, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool, mode: str = "merge"
    ) -> Any:
        api = imported(self, function_id, api_doc, fail_on_warnings, mode)
        apply_document(api, api_doc, mode)
        return api

    models.APIGatewayBackend.put_rest_api = put_rest_api


def apply_document(api: Any, document: dict[str, Any], mode: str) -> None:
    """What API Gateway reads from an imported document beyond moto's import."""
    if mode == "overwrite":
        api.gateway_responses.clear()
    for response_type, entry in (document.get(GATEWAY_RESPONSES) or {}).items():
        api.put_gateway_response(
            response_type,
            status_code=entry.get("statusCode"),
            response_parameters=entry.get("responseParameters"),
            response_templates=entry.get("responseTemplates"),
        )
    for path, operations in (document.get("paths") or {}).items():
        resource = api.get_resource_for_path(path)
        for verb, operation in operations.items():
            method = resource.resource_methods[verb.upper()]
            declared = {
                f"method.request.{PLACES[p['in']]}.{p['name']}": bool(p.get("required"))
                for p in operation.get("parameters") or []
            }
            method.request_parameters = declared or None
            keys = (operation.get(INTEGRATION) or {}).get("cacheKeyParameters")
            if keys and method.method_integration is not None:
                method.method_integration.cache_key_parameters = list(keys)


if __name__ == "__main__":
    install()
    from moto.server import main

    sys.exit(main())
