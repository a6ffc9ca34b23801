"""Global options shared by every command (``--node``, ``--token``, ``-o``, ``--timeout``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_NODE = "http://127.0.0.1:7947"


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"


@dataclass(slots=True)
class GlobalOptions:
    node: str = DEFAULT_NODE
    token: str | None = None
    output: Output = Output.table
    timeout: float = 5.0

    @property
    def json(self) -> bool:
        return self.output == Output.json

    @property
    def wide(self) -> bool:
        return self.output == Output.wide
