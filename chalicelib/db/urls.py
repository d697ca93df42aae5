"""DATABASE_URL / REPLICA_URLS parsing: mysql://USER:PASS@HOST:PORT/DB?ssl=... or sqlite:///PATH."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class DbUrl:
    dialect: str  # "mysql" or "sqlite"
    path: str = ""  # sqlite file (":memory:" allowed)
    host: str = ""
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{self.database}"


def parse_db_url(url: str, need_host: bool = True) -> DbUrl:
    """Parse a database URL. ValueError (never echoing the password) when it is not usable.

    `need_host=False` admits `mysql:///DB` (no host), for credentials that name the host
    (a Secrets Manager secret).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:///PATH")
        return DbUrl("sqlite", path=path)
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise ValueError("database URL must start with mysql:// or sqlite:///")
    if not parts.hostname and need_host:
        raise ValueError("mysql URL needs a host")
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise ValueError("mysql URL has a bad port") from exc
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return DbUrl(
        "mysql",
        host=parts.hostname or "",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")),
        options=options,
    )
