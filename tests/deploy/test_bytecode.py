"""`make deploy` ships chalicelib's bytecode (deploy/bytecode.py): Lambda cannot write caches, so
a package without them compiles every module on every cold start (bench row 4)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploy import bytecode
from deploy import deploy as deploy_step


def project(tmp_path: Path, source: str = "VALUE = 1\n") -> Path:
    (tmp_path / "chalicelib" / "db").mkdir(parents=True)
    (tmp_path / "app.py").write_text("import chalicelib\n")
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    (tmp_path / "chalicelib" / "db" / "mod.py").write_text(source)
    return tmp_path


def cache_of(path: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(path)))


def test_every_chalicelib_module_gets_a_checked_hash_cache(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert bytecode.compile_package(root)
    for module in (root / "chalicelib" / "__init__.py", root / "chalicelib" / "db" / "mod.py"):
        header = cache_of(module).read_bytes()[:16]
        # PEP 552: flags 0b11 = hash-based and checked against the source
        assert int.from_bytes(header[4:8], "little") == 0b11, module
    assert not cache_of(root / "app.py").exists()  # chalice packages app.py without its cache


def test_an_edited_source_is_never_run_from_its_stale_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    assert bytecode.compile_package(root)
    source = root / "chalicelib" / "db" / "mod.py"
    source.write_text("VALUE = 2\n")  # same size, and a file time a zip could round away
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in sys.modules if n == "chalicelib" or n.startswith("chalicelib.")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("chalicelib.db.mod")
    assert module.VALUE == 2


def test_a_module_that_does_not_compile_stops_the_deploy_before_chalice_runs(tmp_path: Path) -> None:
    root = project(tmp_path, source="def broken(:\n")
    ran: list[Any] = []
    ctx = SimpleNamespace(
        options=SimpleNamespace(project_dir=root, stage="prod"), dry=False, offline=False, log=lambda line: None
    )
    with pytest.raises(deploy_step.DeployError, match="does not compile"):
        deploy_step.step_chalice(ctx, lambda *a, **k: ran.append(a))  # type: ignore[arg-type]
    assert ran == []


def test_chalice_deploy_runs_after_the_package_is_compiled(tmp_path: Path) -> None:
    root = project(tmp_path)
    seen: list[bool] = []

    def runner(command: list[str], **_: Any) -> None:
        seen.append(cache_of(root / "chalicelib" / "db" / "mod.py").exists())

    ssm = SimpleNamespace(put_parameter=lambda **_: None)
    ctx = SimpleNamespace(
        options=SimpleNamespace(project_dir=root, stage="prod"),
        dry=False,
        offline=False,
        log=lambda line: None,
        session=SimpleNamespace(client=lambda name: ssm),
        app_name="sluice",
        region="us-east-1",
    )
    deploy_step.step_chalice(ctx, runner)  # type: ignore[arg-type]
    assert seen == [True]
