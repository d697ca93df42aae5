"""The stage's capacity literals live in one place (.chalice/templates/stage-prod.json) and keep
the sizing rules of docs/deploy.md; the deploy step refuses a stage that breaks one."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load as load_cfn_yaml

from deploy import capacity
from deploy import deploy as deploy_step
from deploy.routes import routes_of
from tests.deploy.conftest import ROOT

TEMPLATE = ROOT / ".chalice" / "templates" / "stage-prod.json"


@pytest.fixture(scope="module")
def routes() -> list[Any]:
    import app as app_module

    return routes_of(app_module, queries=False)


@pytest.fixture(scope="module")
def prod() -> capacity.Capacity:
    return capacity.load(ROOT, "prod")


def test_the_loaders_have_a_full_vcpu_written_in_the_stage_template():
    functions = json.loads(TEMPLATE.read_text())["stages"]["prod"]["lambda_functions"]
    # 1,769 MB is one vCPU in Lambda; the loader parses on one thread while the master loads
    assert functions["load_writes"]["lambda_memory_size"] >= 1769
    assert functions["reconcile_writes"]["lambda_memory_size"] >= 1769


def test_the_prod_stage_keeps_every_sizing_rule(prod, routes):
    assert capacity.problems(prod, routes) == []
    assert prod.reads.rate > prod.writes.rate > 0
    assert ("POST", "/todos/batch") in prod.overrides


def test_the_throttles_api_gateway_gets_are_the_stage_templates(prod, routes):
    settings = prod.stage_settings(cache_ttl=0)
    written = json.loads(TEMPLATE.read_text())["capacity"]["throttling"]
    batch = next(r for r in routes if (r.method, r.path) == ("POST", "/todos/batch"))
    get = next(r for r in routes if (r.method, r.path) == ("GET", "/todos"))
    put = next(r for r in routes if (r.method, r.path) == ("PUT", "/todos/{todo_id}"))
    assert settings.throttle_for(batch).rate == written["POST /todos/batch"]["rate"]
    assert settings.throttle_for(get).burst == written["reads"]["burst"]
    assert settings.throttle_for(put).rate == written["writes"]["rate"]
    assert prod.edge_parameters() == {
        "WriteRequestsPerCallerPerMinute": str(
            json.loads(TEMPLATE.read_text())["capacity"]["write_requests_per_caller_per_minute"]
        )
    }


def throttle_literals(path: Path) -> list[int]:
    """Lines of `path` that build a Throttle from numbers written in the code."""
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Throttle"
        and any(isinstance(arg, ast.Constant) for arg in [*node.args, *(k.value for k in node.keywords)])
    ]


def test_no_capacity_literal_is_written_anywhere_else():
    for path in (ROOT / "deploy").glob("*.py"):
        assert throttle_literals(path) == [], path
    edge = load_cfn_yaml(str(ROOT / "infrastructure" / "edge.yaml"))
    assert "Default" not in edge["Parameters"]["WriteRequestsPerCallerPerMinute"]


def broken(prod: capacity.Capacity, **functions: dict[str, int]) -> capacity.Capacity:
    sizes = dict(prod.functions)
    for name, changes in functions.items():
        sizes[name] = replace(sizes[name], **changes)
    return replace(prod, functions=sizes)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda p: broken(p, api_handler={"reserved_concurrency": 50}), "API: 605 requests/s"),
        (lambda p: replace(p, writes_per_caller_per_minute=601), "per caller: 601 writes a minute"),
        (lambda p: replace(p, writes_per_caller_per_minute=9), "per caller: 9 writes a minute"),
        (lambda p: broken(p, load_writes={"memory_mb": 1024}), "load_writes: 1024 MB, under 1769 MB"),
        (lambda p: broken(p, reconcile_writes={"memory_mb": 1024}), "reconcile_writes: 1024 MB"),
        (lambda p: broken(p, reconcile_writes={"timeout_seconds": 900}), "reconcile_writes: a timeout"),
        (lambda p: broken(p, api_handler={"reserved_concurrency": 900}), "Lambda: 907 reserved"),
    ],
)
def test_each_rule_refuses_a_stage_that_breaks_it(prod, routes, change, expected):
    found = capacity.problems(change(prod), routes)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_write_routes_together_stay_within_one_streams_requests(prod, routes):
    # every write route at its rate is one PutRecordBatch each: one request a second over the quota
    writes = [r for r in routes if not r.is_read and (r.method, r.path) not in prod.overrides]
    own = sum(t.rate for t in prod.overrides.values())
    rate = (capacity.FIREHOSE_REQUESTS_PER_SECOND - own + 1) / len(writes)
    busy = broken(replace(prod, writes=capacity.Throttle(rate, int(rate))), api_handler={"reserved_concurrency": 300})
    found = capacity.problems(busy, routes)
    assert len(found) == 1 and found[0].startswith("Firehose: the write routes add up to 1001 requests/s"), found


def test_a_throttle_for_a_route_the_app_does_not_have_is_refused(prod, routes):
    stale = replace(prod, overrides={**prod.overrides, ("POST", "/todos/bulk"): capacity.Throttle(1.0, 2)})
    assert capacity.problems(stale, routes) == ["a throttle for POST /todos/bulk, which the app does not have"]


def test_the_deploy_step_stops_on_a_broken_rule_before_any_aws_call(tmp_path):
    from tests.deploy.test_deploy import copy_project

    project = copy_project(tmp_path / "project")
    template = project / ".chalice" / "templates" / "stage-prod.json"
    document = json.loads(template.read_text())
    document["stages"]["prod"]["lambda_functions"]["load_writes"]["lambda_memory_size"] = 1024
    template.write_text(json.dumps(document))

    class NoAws:  # any AWS call would fail the test: none may happen
        region_name = "eu-west-1"

        def client(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("an AWS call before the sizing rules were checked")

    with pytest.raises(deploy_step.DeployError, match="load_writes: 1024 MB, under 1769 MB"):
        deploy_step.run_infra(NoAws(), deploy_step.Options(project_dir=project), log=lambda _: None)


def test_malformed_capacity_literals_are_one_clear_error(tmp_path):
    from tests.deploy.test_deploy import copy_project

    project = copy_project(tmp_path / "project")
    template = project / ".chalice" / "templates" / "stage-prod.json"
    document = json.loads(template.read_text())
    del document["capacity"]["throttling"]["writes"]
    template.write_text(json.dumps(document))
    with pytest.raises(capacity.CapacityError, match="stage-prod.json: the capacity literals are incomplete"):
        capacity.load(project, "prod")
