"""The deploy step behind `make deploy STAGE=prod` (see docs/deploy.md).

Modules by responsibility: `render` fills the stage's configuration and IAM policies from the
data stack's outputs, `stacks` deploys the CloudFormation stacks, `routes` derives the API's
routes (and what each GET's cache key must hold) from app.py, `apigateway` and `functions`
set what Chalice cannot, and `deploy` runs them in order.
"""
