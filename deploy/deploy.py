"""`make deploy STAGE=prod`: from an AWS account to the whole architecture, and safe to run again.

    python -m deploy.deploy --stage prod [--region eu-west-1] [--parameter AlarmEmail=ops@example.com]
                            [--edge-parameter DomainName=api.example.com ...] [--dry-run]

Steps, every run, in this order (docs/deploy.md explains each):

1. the data stack (infrastructure/data.yaml) in the stage's region: create or update, and wait;
2. its outputs fill the stage's configuration and IAM policies (deploy/render.py), written into a
   build copy of the project (build/deploy-<stage>/), never into the work tree;
3. Chalice's record of the stage from SSM Parameter Store (deploy/state.py), caching off on the
   API stage if the API exists (deploy/apigateway.py says why), then `chalice deploy --stage
   <stage>` from the build copy (functions, roles, REST API, the S3 notification for the loader),
   and the record back to SSM;
4. the app's `migrate` function, when the app has one, so the schema is current;
5. the API settings Chalice cannot make and resets on every deploy: cache keys, gateway
   responses, a new deployment, then cache, throttling and invalidation settings of the stage;
6. the loader's asynchronous invocation config (retries, event age, on-failure queue);
7. the edge stack (infrastructure/edge.yaml) in us-east-1, in front of the API.

`--dry-run` makes no change: it reads what exists (when credentials allow) and prints the calls
each step would make; the build copy is still written so the rendered files can be inspected.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import apigateway, functions, render, stacks, state
from deploy.routes import function_names, routes_of

PROJECT_DIR = Path(__file__).resolve().parent.parent
EDGE_REGION = "us-east-1"  # WAF for CloudFront exists only there
STAGE_SETTINGS = apigateway.StageSettings()
OWN_VARIABLES = frozenset({"Partition", "Region", "AccountId", "Stage", "AppName"})


class DeployError(RuntimeError):
    """The deploy step stopped; the message says why."""


@dataclass
class Options:
    stage: str = "prod"
    region: str | None = None
    dry_run: bool = False
    data_parameters: dict[str, str] = field(default_factory=dict)
    edge_parameters: dict[str, str] = field(default_factory=dict)
    project_dir: Path = PROJECT_DIR


# -- names ----------------------------------------------------------------------------------------
def data_stack_name(app_name: str, stage: str) -> str:
    return f"{app_name}-{stage}-data"


def edge_stack_name(app_name: str, stage: str) -> str:
    return f"{app_name}-{stage}-edge"


def build_dir(project_dir: Path, stage: str) -> Path:
    return project_dir / "build" / f"deploy-{stage}"


# -- templates ------------------------------------------------------------------------------------
def template_output_names(template: Path) -> set[str]:
    """The Outputs a CloudFormation template declares (short intrinsic tags are tolerated)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_tag)
    with open(template, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=Loader)  # a SafeLoader: no arbitrary objects
    return set((document or {}).get("Outputs", {}))


def check_templates(project_dir: Path, config: Mapping[str, Any], stage: str) -> None:
    """Every placeholder in the stage's config and policies names an output or our own value."""
    known = template_output_names(project_dir / "infrastructure" / "data.yaml") | OWN_VARIABLES
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None:
        raise DeployError(f".chalice/config.json has no stage {stage!r}")
    documents = {"config.json": stage_config}
    for name in set(render.policy_files(config, stage).values()):
        path = project_dir / ".chalice" / name
        if not path.exists():
            raise DeployError(f".chalice/{name} is named by the {stage} stage but does not exist")
        documents[name] = render.load_json(path)
    for name, document in documents.items():
        unknown = render.placeholders(document) - known
        if unknown:
            raise DeployError(f".chalice/{name} names {', '.join(sorted(unknown))}, which no output provides")


def dry_run_outputs(project_dir: Path) -> dict[str, str]:
    """Stand-ins for the outputs of a data stack that does not exist yet (for --dry-run)."""
    names = template_output_names(project_dir / "infrastructure" / "data.yaml")
    return {name: f"<{name}>" for name in names if name not in render.OPTIONAL_OUTPUTS}


# -- chalice --------------------------------------------------------------------------------------
def chalice_command(project: Path, stage: str) -> list[str]:
    beside = Path(sys.executable).parent / "chalice"
    binary = str(beside) if beside.exists() else (shutil.which("chalice") or "chalice")
    return [binary, "--project-dir", str(project), "deploy", "--stage", stage]


def chalice_environment(outputs: Mapping[str, str], region: str) -> dict[str, str]:
    """The `chalice deploy` process imports app.py: what it reads at import time must be real.

    The authorizer's user pool ARN and the bucket of the S3 event handler are baked into the API
    and the bucket notification from this process's environment, not from the functions' one.
    """
    env = dict(os.environ)
    env.update(
        COGNITO_USER_POOL_ARN=outputs.get("UserPoolArn", ""),
        WRITES_BUCKET=outputs.get("WritesBucketName", ""),
        AWS_DEFAULT_REGION=region,
        AWS_REGION=region,
    )
    return env


def resources_of(record: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Resource name -> its values, from Chalice's record of a stage ({} before the first deploy)."""
    return {r["name"]: r for r in (record or {}).get("resources", [])}


def deployed_resources(project_dir: Path, stage: str) -> dict[str, dict[str, Any]]:
    """Chalice's record of the stage in the project (.chalice/deployed/<stage>.json)."""
    path = state.record_path(project_dir, stage)
    if not path.exists():
        return {}
    return resources_of(json.loads(path.read_text(encoding="utf-8")))


# -- the steps ------------------------------------------------------------------------------------
def data_stack_spec(project_dir: Path, app_name: str, stage: str, parameters: Mapping[str, str]) -> stacks.StackSpec:
    return stacks.StackSpec(
        name=data_stack_name(app_name, stage),
        template_body=(project_dir / "infrastructure" / "data.yaml").read_text(encoding="utf-8"),
        parameters={"Stage": stage, "ApiName": app_name, **parameters},
        capabilities=("CAPABILITY_IAM",),
        termination_protection=True,
        tags={"Project": app_name, "Stage": stage},
    )


def edge_stack_spec(
    project_dir: Path, app_name: str, stage: str, api_id: str, api_region: str, api_stage: str, extra: Mapping[str, str]
) -> stacks.StackSpec:
    return stacks.StackSpec(
        name=edge_stack_name(app_name, stage),
        template_body=(project_dir / "infrastructure" / "edge.yaml").read_text(encoding="utf-8"),
        parameters={"Stage": stage, "ApiId": api_id, "ApiRegion": api_region, "ApiStage": api_stage, **extra},
        tags={"Project": app_name, "Stage": stage},
    )


def stack_step(cfn: Any, spec: stacks.StackSpec, dry_run: bool, log: Callable[[str], None]) -> dict[str, str] | None:
    """Deploy a stack (or say what would happen); its outputs, or None when it does not exist."""
    if not dry_run:
        return stacks.deploy(cfn, spec, log)
    action, existing = stacks.plan(cfn, spec)
    params = stacks.stack_parameters(spec, existing)
    log(f"would {action} stack {spec.name} with {json.dumps(params)}")
    return stacks.outputs(existing) if existing else None


def caller_account(session: Any, dry_run: bool) -> tuple[str, bool]:
    """(account id, offline): a dry run without credentials plans as for an empty account."""
    from botocore.exceptions import NoCredentialsError

    try:
        return session.client("sts").get_caller_identity()["Account"], False
    except NoCredentialsError:
        if not dry_run:
            raise
        return "<AccountId>", True


def log_desired_api(routes: Sequence[Any], settings: apigateway.StageSettings, log: Callable[[str], None]) -> None:
    """What the API configuration step will make, computed from the app alone."""
    methods = apigateway.desired_method_settings(routes, settings)
    for route in routes:
        key = apigateway.method_key(route)
        entry = methods[key]
        line = f"  {route.method} {route.path}: throttle {entry['throttlingRateLimit']:g}/s burst {entry['throttlingBurstLimit']}"
        if route.is_read:
            line += f", cached {settings.cache_ttl_seconds} s keyed on " + ", ".join(route.cache_key_parameters())
        log(line)
    log("  gateway responses: " + ", ".join(r.response_type for r in apigateway.GATEWAY_RESPONSES))
    for config in functions.ASYNC_CONFIGS:
        log(
            f"  {config.function}: {config.maximum_retry_attempts} retries, events kept "
            f"{config.maximum_event_age_seconds} s, then to {config.destination_output}"
        )
    log(f"  then the edge stack in {EDGE_REGION}")


def load_app(project_dir: Path) -> Any:
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    return importlib.import_module("app")


def apply_or_show(client: Any, calls: Sequence[apigateway.Call], dry_run: bool, log: Callable[[str], None]) -> None:
    for call in calls:
        log(("would " if dry_run else "") + str(call))
    if not dry_run:
        apigateway.apply(client, calls)


@dataclass
class Context:
    """What the steps share: where, who, and what the earlier steps found."""

    session: Any
    options: Options
    log: Callable[[str], None]
    app_name: str
    api_stage: str
    region: str
    account_id: str
    offline: bool
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def dry(self) -> bool:
        return self.options.dry_run


def step_data_stack(ctx: Context) -> None:
    ctx.log("1. data stack")
    spec = data_stack_spec(ctx.options.project_dir, ctx.app_name, ctx.options.stage, ctx.options.data_parameters)
    if ctx.offline:
        ctx.log(f"would create or update stack {spec.name} with {json.dumps(dict(spec.parameters))}")
        outputs = None
    else:
        outputs = stack_step(ctx.session.client("cloudformation"), spec, ctx.dry, ctx.log)
    ctx.outputs = outputs if outputs is not None else dry_run_outputs(ctx.options.project_dir)


def step_render(ctx: Context, config: Mapping[str, Any]) -> Path:
    ctx.log("2. configuration and policies from the outputs")
    project, stage = ctx.options.project_dir, ctx.options.stage
    partition = ctx.session.get_partition_for_region(ctx.region)
    variables = render.template_variables(
        ctx.outputs,
        partition=partition,
        region=ctx.region,
        account_id=ctx.account_id,
        stage=stage,
        app_name=ctx.app_name,
    )
    rendered = render.render_stage_config(config, stage, variables)
    policies = render.render_policies(project, config, stage, variables)
    build = render.build_project(project, build_dir(project, stage), rendered, policies)
    ctx.log(f"rendered into {build}/.chalice/ (config.json, {', '.join(sorted(policies))})")
    ctx.log("environment: " + json.dumps(rendered["stages"][stage].get("environment_variables", {}), sort_keys=True))
    return build


def step_chalice(ctx: Context, build: Path, runner: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    """Chalice's record from the account, caching off (when the API exists), `chalice deploy`,
    the record back to the account; returns the stage's resources as Chalice recorded them."""
    ctx.log("3. chalice deploy")
    project, stage = ctx.options.project_dir, ctx.options.stage
    if ctx.offline:
        before: dict[str, dict[str, Any]] = {}
    else:
        ssm = ctx.session.client("ssm")
        name, path = state.parameter_name(ctx.app_name, stage), state.record_path(project, stage)
        if ctx.dry:
            before = resources_of(state.fetch(ssm, name)) or deployed_resources(project, stage)
        else:
            if state.restore(ssm, name, path):
                ctx.log(f"chalice's record of {stage} restored from SSM parameter {name}")
            before = deployed_resources(project, stage)
    if "rest_api" in before:
        apigw = ctx.session.client("apigateway")
        guard = apigateway.cache_guard_calls(apigw, before["rest_api"]["rest_api_id"], ctx.api_stage)
        apply_or_show(apigw, guard, ctx.dry, ctx.log)
    command = chalice_command(build, stage)
    ctx.log(("would run " if ctx.dry else "running ") + " ".join(command))
    if ctx.dry:
        return before
    try:
        runner(command, env=chalice_environment(ctx.outputs, ctx.region), check=True)
    finally:
        if state.save(ssm, name, path):
            ctx.log(f"chalice's record of {stage} saved to SSM parameter {name}")
    return deployed_resources(project, stage)


def step_migrate(ctx: Context, deployed: Mapping[str, Any]) -> None:
    ctx.log("4. schema")
    if "migrate" not in deployed:
        ctx.log("the app has no migrate function: run `python -m chalicelib.cli migrate` inside the VPC")
        return
    arn = deployed["migrate"]["lambda_arn"]
    ctx.log(("would " if ctx.dry else "") + str(functions.migrate_call(arn)))
    if not ctx.dry:
        ctx.log(f"migrate: {functions.run_migration(ctx.session.client('lambda'), arn)}")


def step_api(ctx: Context, deployed: Mapping[str, Any], app_module: Any) -> None:
    ctx.log("5. API Gateway: cache keys, gateway responses, stage settings")
    missing = function_names(app_module) - set(deployed)
    if missing and not ctx.dry:
        raise DeployError(f"chalice deploy did not record {', '.join(sorted(missing))}")
    apigw = ctx.session.client("apigateway")
    rest_api_id = deployed["rest_api"]["rest_api_id"]
    apigateway.configure_api(apigw, rest_api_id, ctx.api_stage, routes_of(app_module), STAGE_SETTINGS, ctx.dry, ctx.log)


def step_async_invoke(ctx: Context, deployed: Mapping[str, Any]) -> None:
    ctx.log("6. asynchronous invocation of the loader")
    lambda_client = ctx.session.client("lambda")
    for config in functions.ASYNC_CONFIGS:
        arn = deployed[config.function]["lambda_arn"]
        destination = ctx.outputs[config.destination_output]
        apply_or_show(
            lambda_client, functions.async_invoke_calls(lambda_client, config, arn, destination), ctx.dry, ctx.log
        )


def step_edge_stack(ctx: Context, rest_api_id: str) -> None:
    ctx.log(f"7. edge stack ({EDGE_REGION})")
    options = ctx.options
    spec = edge_stack_spec(
        options.project_dir,
        ctx.app_name,
        options.stage,
        rest_api_id,
        ctx.region,
        ctx.api_stage,
        options.edge_parameters,
    )
    edge = stack_step(ctx.session.client("cloudformation", region_name=EDGE_REGION), spec, ctx.dry, ctx.log)
    if edge and "DistributionDomainName" in edge:
        ctx.log(f"done: https://{edge['DistributionDomainName']}/health")


def run(
    session: Any, options: Options, runner: Callable[..., Any] = subprocess.run, log: Callable[[str], None] = print
) -> None:
    project, stage = options.project_dir, options.stage
    config = render.load_json(project / ".chalice" / "config.json")
    check_templates(project, config, stage)  # before any AWS call
    region = session.region_name
    if not region:
        raise DeployError("no AWS region: pass --region or set AWS_REGION / a profile region")
    account_id, offline = caller_account(session, options.dry_run)
    ctx = Context(
        session=session,
        options=options,
        log=log,
        app_name=config["app_name"],
        api_stage=config["stages"][stage].get("api_gateway_stage") or config.get("api_gateway_stage") or "api",
        region=region,
        account_id=account_id,
        offline=offline,
    )
    log(f"stage {stage}: account {account_id}, region {region}{' (dry run: no changes)' if ctx.dry else ''}")
    if offline:
        log("no AWS credentials: planning as for an empty account, reading nothing")

    step_data_stack(ctx)
    build = step_render(ctx, config)
    deployed = step_chalice(ctx, build, runner)
    if "rest_api" not in deployed:
        if not ctx.dry:
            raise DeployError(f"chalice deploy left no rest_api in .chalice/deployed/{stage}.json")
        log("the API does not exist yet; after chalice deploy creates it, steps 4 to 7 set:")
        log_desired_api(routes_of(load_app(project)), STAGE_SETTINGS, log)
        return
    step_migrate(ctx, deployed)
    step_api(ctx, deployed, load_app(project))
    step_async_invoke(ctx, deployed)
    step_edge_stack(ctx, deployed["rest_api"]["rest_api_id"])


# -- command line ---------------------------------------------------------------------------------
def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DeployError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m deploy.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--region", help="the stage's region (default: the profile's or AWS_REGION)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--parameter", action="append", metavar="KEY=VALUE", help="a data stack parameter")
    parser.add_argument("--edge-parameter", action="append", metavar="KEY=VALUE", help="an edge stack parameter")
    args = parser.parse_args(argv)
    return Options(
        stage=args.stage,
        region=args.region,
        dry_run=args.dry_run,
        data_parameters=_pairs(args.parameter, "--parameter"),
        edge_parameters=_pairs(args.edge_parameter, "--edge-parameter"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        options = parse_args(argv)
        # botocore reads AWS_DEFAULT_REGION and the profile; AWS_REGION is honoured here as well.
        region = options.region or os.environ.get("AWS_REGION") or None
        run(boto3.Session(region_name=region), options)
    except (DeployError, stacks.StackError, apigateway.ApiShapeError, render.RenderError) as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    except functions.MigrationFailed as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"deploy: chalice deploy failed (exit {exc.returncode}); its output is above", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"deploy: AWS: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
