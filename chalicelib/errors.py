"""The project's own exceptions. One place (chalicelib.http) maps them to HTTP answers."""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error this project raises on purpose."""


class ApiError(SluiceError):
    """An answer to the client: status, machine code, human message, optional field errors."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "A valid identity token is required.")


def forbidden() -> ApiError:
    return ApiError(403, "forbidden", "You are not allowed to do this.")


def invalid_id() -> ApiError:
    return ApiError(400, "invalid_id", "The id must be a canonical UUID (lowercase, hyphenated).")


def validation_error(fields: dict[str, list[str]]) -> ApiError:
    return ApiError(400, "validation_error", "The request is not valid.", fields=fields)


def invalid_query(message: str) -> ApiError:
    return ApiError(400, "invalid_query", message)


class NotFound(SluiceError):
    """No such resource for this caller (another user's todo is not found either)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"No such {what}.")
        self.what = what


class Unavailable(SluiceError):
    """What was asked cannot be shown yet (a `min_version` no read shows); worth a retry after
    `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(SluiceError):
    """No database server (master or replica) could be reached or it failed mid-way."""


class TransportUnavailable(SluiceError):
    """The write transport did not confirm that it took the commands (they may still land whole:
    a timeout can hide an acceptance; they never land in part)."""


class RecordTooLarge(SluiceError):
    """One request's commands exceed what the transport takes as one record."""


class ObjectUnavailable(SluiceError):
    """A delivered object could not be read (S3 or disk)."""
