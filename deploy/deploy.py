"""`make infra` and `make deploy`: from an AWS account to the whole architecture, safe to run again.

    python -m deploy.deploy infra  --stage prod [--region R] [--parameter K=V ...] [--dry-run]
    python -m deploy.deploy deploy --stage prod [--region R] [--parameter K=V ...]
                                   [--edge-parameter K=V ...] [--rotate-origin-secret]
                                   [--api-cache-ttl [SECONDS]] [--dry-run]

`infra` (docs/deploy.md explains each):
1. the origin secret (SSM SecureString) that CloudFront sends and the API's web ACL checks;
2. the data stack (infrastructure/data.yaml) in the stage's region: create or update, and wait;
   protections (termination protection, the master's deletion protection) only once it exists;
3. its outputs fill the stage template into the project's own `.chalice/config.json` and
   `.chalice/policy-<stage>-*.json` (deploy/render.py);
4. Chalice's record of the stage from SSM Parameter Store (deploy/state.py).
After it, a plain `chalice deploy --stage <stage>` from the project folder updates the stage.

`deploy` is `infra`, then `chalice deploy --stage <stage>` and what Chalice cannot express:
5. chalicelib's bytecode compiled (deploy/bytecode.py), `chalice deploy`, and its record back to SSM;
6. API Gateway: the gateway responses checked (the document chalice sent carries them), the
   stage cache off unless `--api-cache-ttl` turns it on, throttling per method, the regional web
   ACL on the stage;
7. log retention of the functions, the loader's asynchronous invocation config;
8. the edge stack (infrastructure/edge.yaml) in us-east-1, in front of the API (and, after a
   rotation of the origin secret, the data stack without the old value);
9. the app's `migrate` function (synchronous, waiting its whole timeout, never retried);
10. the reconciler, invoked asynchronously: objects deferred until this release load at once.

`--dry-run` makes no change: it reads what exists (when credentials allow) and prints the calls.
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy import apigateway, bytecode, capacity, functions, origin_secret, render, stacks, state, tls
from deploy.routes import function_names, routes_of

PROJECT_DIR = Path(__file__).resolve().parent.parent
EDGE_REGION = "us-east-1"  # WAF for CloudFront exists only there
OWN_VARIABLES = frozenset({"Partition", "Region", "AccountId", "Stage", "AppName"})
SECRET_PARAMETERS = frozenset({"OriginVerifyCurrent", "OriginVerifyPrevious", "OriginVerifyValue"})


class DeployError(RuntimeError):
    """The deploy step stopped; the message says why."""


@dataclass
class Options:
    stage: str = "prod"
    region: str | None = None
    dry_run: bool = False
    rotate_origin_secret: bool = False
    # API Gateway's stage cache for GETs: its TTL in seconds, 0 off; None keeps what the stage has
    # (a new stage: off).
    api_cache_ttl: int | None = None
    data_parameters: dict[str, str] = field(default_factory=dict)
    edge_parameters: dict[str, str] = field(default_factory=dict)
    project_dir: Path = PROJECT_DIR


# -- names ----------------------------------------------------------------------------------------
def data_stack_name(app_name: str, stage: str) -> str:
    return f"{app_name}-{stage}-data"


def edge_stack_name(app_name: str, stage: str) -> str:
    return f"{app_name}-{stage}-edge"


# -- templates ------------------------------------------------------------------------------------
def template_output_names(template: Path) -> set[str]:
    """The Outputs a CloudFormation template declares (short intrinsic tags are tolerated)."""
    return set(stacks.template_section(template.read_text(encoding="utf-8"), "Outputs"))


def check_templates(project_dir: Path, config: Mapping[str, Any], stage: str) -> None:
    """Every placeholder in the stage's config and policies names an output or our own value."""
    known = template_output_names(project_dir / "infrastructure" / "data.yaml") | OWN_VARIABLES
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None or not render.stage_template_path(project_dir, stage).exists():
        raise DeployError(
            f"stage {stage!r} has no infrastructure template ({render.stage_template_path(project_dir, stage).relative_to(project_dir)}); "
            "`dev` is served by `chalice local` only"
        )
    documents = {"config.json": stage_config}
    for name in set(render.policy_files(config, stage).values()):
        path = project_dir / render.TEMPLATE_DIR / name
        if not path.exists():
            raise DeployError(f"{render.TEMPLATE_DIR / name} is named by the {stage} stage but does not exist")
        documents[name] = render.load_json(path)
    for name, document in documents.items():
        unknown = render.placeholders(document) - known
        if unknown:
            raise DeployError(f".chalice/{name} names {', '.join(sorted(unknown))}, which no output provides")


def check_bundles(
    project_dir: Path, stage_config: Mapping[str, Any], dry_run: bool, log: Callable[[str], None]
) -> None:
    """The CA bundles the stage's database URLs name, checked before any AWS call (deploy/tls.py);
    a dry run only warns."""
    try:
        for warning in tls.check_bundles(project_dir, tls.stage_environments(stage_config)):
            log(f"warning: {warning}")
    except tls.BundleMissing as exc:
        if not dry_run:
            raise
        log(f"warning: {exc}")


def dry_run_outputs(project_dir: Path) -> dict[str, str]:
    """Stand-ins for the outputs of a data stack that does not exist yet (for --dry-run)."""
    names = template_output_names(project_dir / "infrastructure" / "data.yaml")
    return {name: f"<{name}>" for name in names if name not in render.OPTIONAL_OUTPUTS}


# -- chalice --------------------------------------------------------------------------------------
def chalice_command(project: Path, stage: str) -> list[str]:
    beside = Path(sys.executable).parent / "chalice"
    binary = str(beside) if beside.exists() else (shutil.which("chalice") or "chalice")
    return [binary, "--project-dir", str(project), "deploy", "--stage", stage]


def chalice_environment(region: str) -> dict[str, str]:
    """The `chalice deploy` process: the stage's region. Everything else it reads at import time
    (the user pool ARN of the authorizer, the bucket of the S3 handler) comes from the stage's
    `environment_variables`, which chalice sets in its own process before importing app.py."""
    env = dict(os.environ)
    env.update(AWS_DEFAULT_REGION=region, AWS_REGION=region)
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
def data_stack_spec(
    project_dir: Path, app_name: str, stage: str, api_stage: str, parameters: Mapping[str, str]
) -> stacks.StackSpec:
    """The data stack; ApiName and ApiStage are the dimensions of the API's metrics in its alarms."""
    return stacks.StackSpec(
        name=data_stack_name(app_name, stage),
        template_body=(project_dir / "infrastructure" / "data.yaml").read_text(encoding="utf-8"),
        parameters={"Stage": stage, "ApiName": app_name, "ApiStage": api_stage, **parameters},
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


def stack_step(ctx: Context, cfn: Any, spec: stacks.StackSpec) -> dict[str, str] | None:
    """Deploy a stack through its template in S3 (or say what would happen); its outputs, or None
    when it does not exist. Every create and update, protection updates included, names the
    template by URL: CloudFormation takes at most 51,200 bytes inline, and a template that grows
    past that must not need another code path on the day it does."""
    region = cfn.meta.region_name
    bucket = stacks.template_bucket(ctx.app_name, ctx.options.stage, ctx.account_id, region)
    if ctx.dry:
        ctx.log(f"would upload the template of {spec.name} to s3://{bucket}/{spec.name}/")
        spec = replace(spec, template_url=f"https://{bucket}.s3.{region}.amazonaws.com/{spec.name}/<sha256>.yaml")
    else:
        s3 = ctx.session.client("s3", region_name=region)
        spec = stacks.upload_template(s3, bucket, region, spec, ctx.account_id)
        ctx.log(f"template of {spec.name}: {spec.template_url}")
    if not ctx.dry:
        return stacks.deploy(cfn, spec, ctx.log)
    action, existing = stacks.plan(cfn, spec)
    params = stacks.stack_parameters(spec, existing)
    shown = [
        p
        if "ParameterValue" not in p or p["ParameterKey"] not in SECRET_PARAMETERS
        else {**p, "ParameterValue": "****"}
        for p in params
    ]
    ctx.log(f"would {action} stack {spec.name} with {json.dumps(shown)}")
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
    """What the steps after chalice deploy will set, computed from the app alone."""
    methods = apigateway.desired_method_settings(routes, settings)
    for route in routes:
        entry = methods[apigateway.method_key(route)]
        cached = f"cached {entry['cacheTtlInSeconds']} s" if entry["cachingEnabled"] else "not cached"
        log(
            f"  {route.method} {route.path}: throttle {entry['throttlingRateLimit']:g}/s burst {entry['throttlingBurstLimit']}, {cached} by API Gateway"
        )
    log("  gateway responses: " + ", ".join(r.response_type for r in apigateway.GATEWAY_RESPONSES))
    for config in functions.ASYNC_CONFIGS:
        log(
            f"  {config.function}: {config.maximum_retry_attempts} retries, events kept "
            f"{config.maximum_event_age_seconds} s, then to {config.destination_output}"
        )
    log(f"  then the edge stack in {EDGE_REGION} (CloudFront, caching nothing)")


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
    sizes: capacity.Capacity  # the stage's throttles, per-caller limit and function sizes
    outputs: dict[str, str] = field(default_factory=dict)
    origin: origin_secret.OriginSecret | None = None

    @property
    def dry(self) -> bool:
        return self.options.dry_run


def step_origin_secret(ctx: Context) -> None:
    ctx.log("1. origin secret (CloudFront -> API)")
    if ctx.offline:
        ctx.origin = origin_secret.OriginSecret(current="<generated>")
        ctx.log(f"would create SSM parameter {origin_secret.parameter_name(ctx.app_name, ctx.options.stage)}")
        return
    ssm = ctx.session.client("ssm")
    name = origin_secret.parameter_name(ctx.app_name, ctx.options.stage)
    ctx.origin = origin_secret.ensure(ssm, name, rotate=ctx.options.rotate_origin_secret, dry_run=ctx.dry, log=ctx.log)


def step_data_stack(ctx: Context, origin_values: origin_secret.OriginSecret | None = None) -> None:
    ctx.log("2. data stack")
    project, stage = ctx.options.project_dir, ctx.options.stage
    parameters = dict(ctx.options.data_parameters)
    values = origin_values or ctx.origin
    if values is not None:
        parameters.update(OriginVerifyCurrent=values.current, OriginVerifyPrevious=values.previous)
    spec = data_stack_spec(project, ctx.app_name, stage, ctx.api_stage, parameters)
    if ctx.offline:
        ctx.log(f"would create stack {spec.name}")
        outputs = None
    else:
        cfn = ctx.session.client("cloudformation")
        existing = stacks.describe(cfn, spec.name)
        if existing is not None and existing.get("StackStatus", "").endswith("_COMPLETE"):
            # Deletion protection of the master only on a stack that exists: a first creation
            # that fails must be able to roll back and be deleted.
            spec = data_stack_spec(
                project, ctx.app_name, stage, ctx.api_stage, {"DatabaseDeletionProtection": "true", **parameters}
            )
        outputs = stack_step(ctx, cfn, spec)
        if existing is None and outputs is not None and not ctx.dry:
            protected = data_stack_spec(
                project, ctx.app_name, stage, ctx.api_stage, {"DatabaseDeletionProtection": "true", **parameters}
            )
            ctx.log("created; switching the master's deletion protection on")
            outputs = stack_step(ctx, cfn, protected)
    ctx.outputs = outputs if outputs is not None else dry_run_outputs(project)


def step_render(ctx: Context, config: Mapping[str, Any]) -> None:
    ctx.log("3. the stage's configuration and policies from the outputs")
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
    env = rendered["stages"][stage].get("environment_variables", {})
    if ctx.dry:
        ctx.log("would write .chalice/config.json (stage " + stage + ") and " + ", ".join(sorted(policies)))
    else:
        written = render.write_stage(project, rendered, stage, policies)
        ctx.log("wrote " + ", ".join(str(p.relative_to(project)) for p in written))
    ctx.log("environment: " + json.dumps(env, sort_keys=True))


def step_restore_record(ctx: Context) -> None:
    ctx.log("4. chalice's record of the stage")
    if ctx.offline:
        return
    project, stage = ctx.options.project_dir, ctx.options.stage
    name, path = state.parameter_name(ctx.app_name, stage), state.record_path(project, stage)
    where = path.relative_to(project)
    if ctx.dry:
        ctx.log(f"would sync {where} with SSM parameter {name} (the newer one wins)")
        return
    outcome = state.sync(ctx.session.client("ssm"), name, path)
    ctx.log(
        {
            "restored": f"restored {where} from SSM parameter {name}",
            "saved": f"{where} kept, and saved to SSM parameter {name} (it is the newer one)",
            "same": f"{where} is the same as SSM parameter {name}",
            "none": f"no record of the stage yet ({where}, SSM parameter {name}): chalice deploy will create it",
        }[outcome]
    )


def step_chalice(ctx: Context, runner: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    """`chalice deploy --stage <stage>` from the project folder, its record back to SSM."""
    project, stage = ctx.options.project_dir, ctx.options.stage
    command = chalice_command(project, stage)
    ctx.log(("would run " if ctx.dry else "running ") + " ".join(command))
    if ctx.dry or ctx.offline:
        return deployed_resources(project, stage)
    if not bytecode.compile_package(project):
        raise DeployError(f"chalicelib/ under {project} does not compile: nothing deployed")
    ctx.log("chalicelib/ compiled to bytecode (checked-hash): the package ships it")
    ssm = ctx.session.client("ssm")
    name, path = state.parameter_name(ctx.app_name, stage), state.record_path(project, stage)
    try:
        runner(command, env=chalice_environment(ctx.region), check=True)
    finally:
        if state.save(ssm, name, path):
            ctx.log(f"chalice's record of {stage} saved to SSM parameter {name}")
    return deployed_resources(project, stage)


def step_migrate(ctx: Context, deployed: Mapping[str, Any]) -> None:
    """The app's `migrate` function, once every protection is in place: its failure stops the run
    with nothing else skipped but the reconcile after it."""
    ctx.log("9. migrate (the master's schema, inside the VPC)")
    if "migrate" not in deployed:
        ctx.log("the app has no migrate function: run `python -m chalicelib.cli migrate` inside the VPC")
        return
    arn = deployed["migrate"]["lambda_arn"]
    if ctx.dry:
        ctx.log(f"would {functions.migrate_call(arn)}, waiting the function's timeout, never retried")
        return
    timeout = functions.function_timeout(ctx.session.client("lambda"), arn)
    client = functions.migrate_client(ctx.session, timeout)
    ctx.log(
        f"{functions.migrate_call(arn)}: waits up to {timeout + functions.INVOKE_READ_MARGIN_SECONDS} s, one attempt"
    )
    ctx.log(f"migrate: {functions.run_migration(client, arn)}")


def step_reconcile_deferred(ctx: Context, deployed: Mapping[str, Any]) -> None:
    """The reconciler, invoked now (asynchronously) rather than at its next scheduled run: objects
    the loader deferred until this release's schema or command version was there load at once."""
    ctx.log("10. reconcile of deferred objects")
    if functions.RECONCILE_FUNCTION not in deployed:
        ctx.log(f"the app has no {functions.RECONCILE_FUNCTION} function: nothing to ask")
        return
    arn = deployed[functions.RECONCILE_FUNCTION]["lambda_arn"]
    event = functions.reconcile_event(ctx.account_id, ctx.region, datetime.now(UTC))
    apply_or_show(ctx.session.client("lambda"), [functions.reconcile_call(arn, event)], ctx.dry, ctx.log)


def step_api(ctx: Context, deployed: Mapping[str, Any], app_module: Any) -> None:
    ctx.log("6. API Gateway: gateway responses, stage cache, throttling, web ACL")
    missing = function_names(app_module) - set(deployed)
    if missing and not ctx.dry:
        raise DeployError(f"chalice deploy did not record {', '.join(sorted(missing))}")
    apigw = ctx.session.client("apigateway")
    rest_api_id = deployed["rest_api"]["rest_api_id"]
    settings = stage_settings(ctx, apigw, rest_api_id)
    routes = routes_of(app_module, queries=settings.caches)  # the keys a cached GET must have
    apigateway.configure_api(apigw, rest_api_id, ctx.api_stage, routes, settings, ctx.dry, ctx.log)
    acl = ctx.outputs.get("ApiWebAclArn")
    if acl:
        waf = ctx.session.client("wafv2")
        stage_arn = apigateway.stage_arn(
            ctx.session.get_partition_for_region(ctx.region), ctx.region, rest_api_id, ctx.api_stage
        )
        apply_or_show(waf, apigateway.web_acl_calls(waf, acl, stage_arn), ctx.dry, ctx.log)


def stage_settings(ctx: Context, apigw: Any, rest_api_id: str) -> apigateway.StageSettings:
    """The stage template's throttles, with the stage cache asked for (`--api-cache-ttl`), else
    the one the stage has."""
    ttl = ctx.options.api_cache_ttl
    if ttl is None:
        ttl = apigateway.current_cache_ttl(apigateway.get_stage(apigw, rest_api_id, ctx.api_stage))
    if ttl:
        ctx.log(f"  API Gateway's stage cache: on for GETs, {ttl} s (--api-cache-ttl 0 turns it off)")
    return ctx.sizes.stage_settings(cache_ttl=ttl)


def step_functions(ctx: Context, deployed: Mapping[str, Any]) -> None:
    ctx.log("7. log retention and the loader's asynchronous invocation")
    logs = ctx.session.client("logs")
    names = [
        v["lambda_arn"].rsplit(":", 1)[-1] for v in deployed.values() if v.get("resource_type") == "lambda_function"
    ]
    apply_or_show(logs, functions.log_retention_calls(logs, sorted(names)), ctx.dry, ctx.log)
    lambda_client = ctx.session.client("lambda")
    for config in functions.ASYNC_CONFIGS:
        arn = deployed[config.function]["lambda_arn"]
        destination = ctx.outputs[config.destination_output]
        apply_or_show(
            lambda_client, functions.async_invoke_calls(lambda_client, config, arn, destination), ctx.dry, ctx.log
        )


def step_edge_stack(ctx: Context, rest_api_id: str) -> None:
    ctx.log(f"8. edge stack ({EDGE_REGION})")
    options = ctx.options
    # The edge's alarms notify the data stack's address too (their topic is in us-east-1); its
    # per-caller write limit is the stage template's.
    extra = {
        "AlarmEmail": ctx.outputs.get("AlarmEmail", ""),
        **ctx.sizes.edge_parameters(),
        **options.edge_parameters,
    }
    if ctx.origin is not None:
        extra["OriginVerifyValue"] = ctx.origin.current
    spec = edge_stack_spec(
        options.project_dir, ctx.app_name, options.stage, rest_api_id, ctx.region, ctx.api_stage, extra
    )
    edge = stack_step(ctx, ctx.session.client("cloudformation", region_name=EDGE_REGION), spec)
    if edge and "DistributionDomainName" in edge:
        ctx.log(f"done: https://{edge['DistributionDomainName']}/health")


def check_capacity(project_dir: Path, stage: str) -> capacity.Capacity:
    """The stage template's capacity literals, held to the sizing rules (docs/deploy.md, Sizing)
    against the app's routes, before any AWS call."""
    try:
        sizes = capacity.load(project_dir, stage)
    except capacity.CapacityError as exc:
        raise DeployError(str(exc)) from exc
    broken = capacity.problems(sizes, routes_of(load_app(project_dir), queries=False))
    if broken:
        where = render.stage_template_path(project_dir, stage).relative_to(project_dir)
        raise DeployError(f"{where} breaks the sizing rules (docs/deploy.md, Sizing): " + "; ".join(broken))
    return sizes


def context_for(session: Any, options: Options, log: Callable[[str], None]) -> tuple[Context, dict[str, Any]]:
    project, stage = options.project_dir, options.stage
    config = render.template_config(project)
    check_templates(project, config, stage)  # before any AWS call
    sizes = check_capacity(project, stage)
    check_bundles(project, config["stages"][stage], options.dry_run, log)
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
        sizes=sizes,
    )
    log(f"stage {stage}: account {account_id}, region {region}{' (dry run: no changes)' if ctx.dry else ''}")
    if offline:
        log("no AWS credentials: planning as for an empty account, reading nothing")
    return ctx, config


def run_infra(session: Any, options: Options, log: Callable[[str], None] = print) -> Context:
    """Stacks, then the files a plain `chalice deploy --stage <stage>` reads."""
    ctx, config = context_for(session, options, log)
    step_origin_secret(ctx)
    step_data_stack(ctx)
    step_render(ctx, config)
    step_restore_record(ctx)
    return ctx


def run(
    session: Any, options: Options, runner: Callable[..., Any] = subprocess.run, log: Callable[[str], None] = print
) -> None:
    """`make deploy`: infra, `chalice deploy`, and what Chalice cannot express."""
    ctx = run_infra(session, options, log)
    ctx.log("5. chalice deploy")
    deployed = step_chalice(ctx, runner)
    if "rest_api" not in deployed:
        if not ctx.dry:
            raise DeployError(f"chalice deploy left no rest_api in .chalice/deployed/{options.stage}.json")
        log("the API does not exist yet; after chalice deploy creates it, steps 6 to 10 set:")
        settings = ctx.sizes.stage_settings(cache_ttl=options.api_cache_ttl or 0)
        log_desired_api(routes_of(load_app(options.project_dir), queries=False), settings, log)
        return
    # The protections first (the stage's, the functions', the edge's), then the schema, then what
    # waited for it: a migrate that fails skips none of them.
    step_api(ctx, deployed, load_app(options.project_dir))
    step_functions(ctx, deployed)
    step_edge_stack(ctx, deployed["rest_api"]["rest_api_id"])
    if ctx.origin is not None and ctx.origin.previous and not ctx.dry:
        # CloudFront now sends the new value (the edge stack waited for it): stop accepting the old.
        ctx.log("origin secret rotated: the web ACL stops accepting the previous value")
        ctx.origin = origin_secret.finish_rotation(
            ctx.session.client("ssm"), origin_secret.parameter_name(ctx.app_name, options.stage)
        )
        step_data_stack(ctx)
    step_migrate(ctx, deployed)
    step_reconcile_deferred(ctx, deployed)


# -- command line ---------------------------------------------------------------------------------
def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DeployError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _cache_ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= apigateway.MAX_CACHE_TTL:
        raise argparse.ArgumentTypeError(f"a TTL in seconds from 0 (off) to {apigateway.MAX_CACHE_TTL}, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> tuple[str, Options]:
    parser = argparse.ArgumentParser(prog="python -m deploy.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("infra", "deploy"), default="deploy")
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--region", help="the stage's region (default: the profile's or AWS_REGION)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--rotate-origin-secret", action="store_true", help="a new CloudFront origin secret")
    parser.add_argument(
        "--api-cache-ttl",
        type=_cache_ttl,
        nargs="?",
        const=apigateway.DEFAULT_CACHE_TTL,
        metavar="SECONDS",
        help=f"API Gateway's stage cache for GETs: on with this TTL (alone: {apigateway.DEFAULT_CACHE_TTL} s), "
        "0 turns it off; without the flag the stage keeps what it has (a new one: off). docs/deploy.md",
    )
    parser.add_argument("--parameter", action="append", metavar="KEY=VALUE", help="a data stack parameter")
    parser.add_argument("--edge-parameter", action="append", metavar="KEY=VALUE", help="an edge stack parameter")
    args = parser.parse_args(argv)
    return args.command, Options(
        stage=args.stage,
        region=args.region,
        dry_run=args.dry_run,
        rotate_origin_secret=args.rotate_origin_secret,
        api_cache_ttl=args.api_cache_ttl,
        data_parameters=_pairs(args.parameter, "--parameter"),
        edge_parameters=_pairs(args.edge_parameter, "--edge-parameter"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        command, options = parse_args(argv)
        # botocore reads AWS_DEFAULT_REGION and the profile; AWS_REGION is honoured here as well.
        region = options.region or os.environ.get("AWS_REGION") or None
        session = boto3.Session(region_name=region)
        if command == "infra":
            run_infra(session, options)
        else:
            run(session, options)
    except (
        DeployError,
        stacks.StackError,
        apigateway.ApiShapeError,
        render.RenderError,
        tls.BundleMissing,
        origin_secret.RotationUnfinished,
    ) as exc:
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
