"""Against the real server: a LOAD DATA LOCAL the loader did not route through `sending` is
refused by the client before any byte of the file is read (as a rogue server's request would be)."""

from __future__ import annotations

import pytest

from chalicelib.db import local_files
from chalicelib.db.database import open_master
from chalicelib.errors import DatabaseUnavailable

pytestmark = pytest.mark.mariadb


def test_the_server_gets_only_the_file_the_statement_was_sent_with(mysql_url: str, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_ACCESS_KEY=not-for-the-server\n")
    db = open_master(mysql_url)
    try:
        with db.transaction() as cur:
            cur.execute("CREATE TABLE scratch (line VARCHAR(200))")
        load = "LOAD DATA LOCAL INFILE %s INTO TABLE scratch"
        with pytest.raises(DatabaseUnavailable, match="LOAD DATA LOCAL refused"):
            with db.transaction() as cur:
                cur.execute(load, (str(secret),))
        assert db.query("SELECT COUNT(*) FROM scratch") == [(0,)]
        with db.transaction() as cur:  # named for its statement: sent (so the refusal above was the guard)
            with local_files.sending(cur.connection, str(secret)):
                assert cur.execute(load, (str(secret),)) == 1
        assert db.query("SELECT line FROM scratch") == [("AWS_SECRET_ACCESS_KEY=not-for-the-server",)]
    finally:
        db.discard()
