"""Read side: the interface every reader keeps (SQL, replica failover, cache)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Row = dict[str, Any]


class TodoReader(ABC):
    """What GET routes need. Every implementation returns rows as the API shows them."""

    @abstractmethod
    def get_todo(self, owner: str, todo_id: str) -> Row | None: ...

    @abstractmethod
    def list_todos(self, owner: str, after: str | None, limit: int, state: str | None) -> list[Row]:
        """Live todos of `owner` with id > after, ascending id, at most `limit`."""

    @abstractmethod
    def get_profile(self, owner: str) -> Row | None: ...
