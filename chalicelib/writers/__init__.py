"""Write side: a writer durably accepts commands or raises TransportUnavailable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # commands are made by the write routes, which import them themselves
    from chalicelib.commands import WriteCommand


class CommandWriter(ABC):
    @abstractmethod
    def write(self, commands: Sequence[WriteCommand]) -> None:
        """Durably accept the commands of one request as one unit (one record, one object), or
        raise TransportUnavailable: then all or none of them may land, never some."""
