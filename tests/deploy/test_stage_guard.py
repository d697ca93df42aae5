"""A stage without its infrastructure is never deployed, and never accepts writes in Lambda."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib import stage_guard

ROOT = Path(__file__).resolve().parents[2]


def test_chalice_deploy_of_a_stage_without_firehose_stops_with_one_line():
    with pytest.raises(SystemExit) as stopped:
        stage_guard.check({}, ("deploy", "dev"))
    message = str(stopped.value.code)
    assert "\n" not in message
    assert message.startswith("chalice deploy: stage 'dev' has no infrastructure")
    with pytest.raises(SystemExit, match="chalice package: stage 'prod'"):
        stage_guard.check({"WRITE_TRANSPORT": "local"}, ("package", "prod"))


def test_in_lambda_the_local_transport_refuses_to_start():
    env = {"AWS_LAMBDA_FUNCTION_NAME": "sluice-dev", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}
    with pytest.raises(stage_guard.StageWithoutInfrastructure, match="would lose every write"):
        stage_guard.check(env, (None, None))
    with pytest.raises(stage_guard.StageWithoutInfrastructure):
        stage_guard.check({**env, "WRITE_TRANSPORT": "LOCAL "}, (None, None))
    # A process that only names a function (tests, benchmarks importing the app as Lambda would)
    # is not Lambda's runtime.
    stage_guard.check({"AWS_LAMBDA_FUNCTION_NAME": "sluice-test"}, (None, None))


@pytest.mark.parametrize("command", [("local", "dev"), (None, None), ("deploy", "prod")])
def test_local_use_and_a_firehose_stage_pass(command):
    if command[0] == "deploy":
        stage_guard.check({"WRITE_TRANSPORT": "firehose"}, command)
        stage_guard.check({"WRITE_TRANSPORT": "firehose", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}, command)
    else:
        stage_guard.check({}, command)  # chalice local, the test client


def test_the_running_chalice_command_is_read_from_click():
    import click

    seen = []

    @click.group()
    def cli() -> None:  # like chalice's: `chalice deploy` is a subcommand of a group
        pass

    @cli.command(name="deploy")
    @click.option("--stage", default="dev")
    def deploy(stage: str) -> None:
        seen.append(stage_guard.chalice_command())

    cli.main(["deploy", "--stage", "prod"], standalone_mode=False)
    assert seen == [("deploy", "prod")]
    assert stage_guard.chalice_command() == (None, None)


def test_chalices_policy_analyzer_finds_no_aws_call_in_app_py():
    """Why `dev` (autogen_policy: true) could never work: the analyzer behind autogen_policy reads
    app.py alone, and app.py makes no AWS call (its routes are derived in chalicelib/routes.py and
    every client is made in chalicelib), so it would grant nothing the functions call. The prod
    stage writes its policies by hand (autogen_policy: false), and dev stops earlier, at the
    guard, with one line. (Before the routes were derived, the analyzer crashed on app.py.)"""
    from chalice.analyzer import get_client_calls_for_app

    assert get_client_calls_for_app((ROOT / "app.py").read_text()) == {}
