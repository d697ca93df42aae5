"""How a MySQL/MariaDB error is classified: its code (`mysql_error_code`), the code sets that
mean a lost connection, a retryable transaction or a statement the server refused for its
character sets, and the errors PyMySQL raises once it has dropped a connection's socket."""

from __future__ import annotations

# Client errors that mean the connection itself is gone (server restarted, idle timeout, network).
CONNECTION_LOST = frozenset({2006, 2013, 2055})
ACCESS_DENIED = 1045
SSL_NOT_OFFERED = 2026  # CR_SSL_CONNECTION_ERROR: "SSL is required but the server doesn't support it"
# Lock wait timeout, deadlock, and (MariaDB with innodb_snapshot_isolation, the default from 11.6)
# "record has changed since last read": the transaction can simply run again.
RETRYABLE = frozenset({1205, 1213, 1020})
# The server refused the statement for its character sets or collations (PyMySQL raises these as
# OperationalError, like an outage): "Illegal mix of collations" for two, three or more operands
# (1267, 1270, 1271), a collation not of its character set (1253), an unknown collation or
# character set (1273, 1115), an invalid character string (1300), a conversion between
# collations that cannot be done (MySQL 8: 3988), a collation an indexed column cannot use
# (MariaDB: 4063). A bug in the statement or its parameters, never an outage: raised as it is
# (a 500), and no breaker opens.
CHARSET_ERRORS = frozenset({1115, 1253, 1267, 1270, 1271, 1273, 1300, 3988, 4063})


def mysql_error_code(exc: BaseException | None) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection itself is gone: 2006, 2013, 2055, or what PyMySQL raises
    once it has dropped the socket."""
    return mysql_error_code(exc) in CONNECTION_LOST or connection_dropped_inside_pymysql(exc)


def connection_dropped_inside_pymysql(exc: BaseException) -> bool:
    """Errors PyMySQL raises, once it has dropped a connection's socket, that do not say so: an
    AttributeError on the socket it set to None ('NoneType' object has no attribute 'sendall'),
    from the `finally` that ends a LOAD DATA LOCAL whose file could not be sent, and an
    InternalError for a reply out of sequence (it drops the socket first). Raised by PyMySQL's
    own code, not by a bug of ours: the connection is lost, as with 2006 or 2013."""
    import pymysql

    if isinstance(exc, pymysql.err.InternalError):
        return "Packet sequence number wrong" in str(exc)
    if not isinstance(exc, AttributeError) or "'NoneType' object has no attribute" not in str(exc):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and str(frame.tb_frame.f_globals.get("__name__", "")).startswith("pymysql.")
