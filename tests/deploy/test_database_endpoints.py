"""Which database endpoint each function of the prod stage uses, from the stage as `make infra`
renders it: the loader, the reconciler and migrate on the master's instance endpoint (LOAD DATA
LOCAL, temporary tables and SET SESSION never go through RDS Proxy), reads on the replicas with
the master through RDS Proxy as their last fallback. Every URL verifies its server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.db.tls import PACKAGED_BUNDLES
from chalicelib.readers.replicas import ReplicaReader
from chalicelib.writers.local import LocalWriter
from deploy import render
from tests.deploy.conftest import OUTPUTS


def prod_services(config: dict[str, Any], variables: Any, tmp_path: Path) -> bootstrap.Services:
    env = dict(render.render_stage_config(config, "prod", variables)["stages"]["prod"]["environment_variables"])
    env.pop("DATABASE_SECRET_ARN")  # no Secrets Manager here; nothing connects anyway
    settings = Settings.from_env({**env, "LOCAL_DATA_DIR": str(tmp_path)})
    # Building opens no connection: every database is reached on first use.
    return bootstrap.build(settings, writer=LocalWriter(str(tmp_path), load=lambda *_: None))


def test_the_loader_reconciler_and_migrate_use_the_masters_instance_endpoint(config, variables, tmp_path):
    master = prod_services(config, variables, tmp_path).master  # what load_writes, reconcile_writes and migrate use
    assert master.url.host == OUTPUTS["MasterEndpoint"] != OUTPUTS["ProxyEndpoint"]
    tls = master.tls  # type: ignore[attr-defined]
    assert (tls.mode, tls.ca) == ("verify_identity", PACKAGED_BUNDLES["rds"])
    assert master.local_infile  # type: ignore[attr-defined]


def test_reads_go_to_the_replicas_and_keep_the_proxy_as_their_last_fallback(config, variables, tmp_path):
    reader = prod_services(config, variables, tmp_path).reader
    assert isinstance(reader, ReplicaReader)
    *replicas, last = reader.readers  # each process takes the replicas in an order of its own
    assert sorted(r.db.url.host for r in replicas) == sorted(OUTPUTS["ReplicaEndpoints"].split(","))  # type: ignore[attr-defined]
    assert last.db.url.host == OUTPUTS["ProxyEndpoint"]  # type: ignore[attr-defined]
    for replica in replicas:
        assert (replica.db.tls.mode, replica.db.tls.ca) == ("verify_identity", PACKAGED_BUNDLES["rds"])  # type: ignore[attr-defined]
    assert (last.db.tls.mode, last.db.tls.ca) == ("verify_identity", "system")  # type: ignore[attr-defined]


def test_without_master_read_url_reads_fall_back_to_database_url():
    settings = Settings.from_env({"DATABASE_URL": "mysql://m.example:3306/s"})
    assert settings.master_read_url == "mysql://m.example:3306/s"
    assert settings.replica_urls == ("mysql://m.example:3306/s",)
    proxied = Settings.from_env({"DATABASE_URL": "mysql://m.example/s", "MASTER_READ_URL": "mysql://p.example/s"})
    assert proxied.replica_urls == ("mysql://p.example/s",)  # reads reach the master as MASTER_READ_URL says
