"""moto's server, with one stand-in: a deployment to an existing stage keeps the stage's settings.

API Gateway's CreateDeployment with a stageName that exists points that stage at the new
deployment; the stage's cache cluster, method settings (caching, throttling) and tracing stay.
moto replaces the stage with a new one, which would hide exactly what tests/deploy/
test_emulated_deploy.py checks: what a plain `chalice deploy` leaves in the stage settings.
"""

from __future__ import annotations

import sys
from typing import Any


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


if __name__ == "__main__":
    install()
    from moto.server import main

    sys.exit(main())
