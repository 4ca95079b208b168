"""What is wrong with a config, said as ``file:line key: message``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.errors import GatewayError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class ConfigProblem:
    """One finding in one file. ``line`` is 1-based; ``key`` is "" for whole-file problems."""

    file: Path | None
    line: int | None
    key: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        # The file name only: technicians know which folder they are in, and full paths make
        # the line too long to read on a small console. Messages that need the path say it.
        where = self.file.name if self.file is not None else ""
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where = f"{where} {self.key}" if where else self.key
        text = f"warning: {self.message}" if self.severity == "warning" else self.message
        return f"{where}: {text}" if where else text


class ConfigError(GatewayError):
    """The config was refused; ``problems`` lists every error found, one per line in str()."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def sort_problems(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    """Order one file's problems top to bottom, whole-file and missing-table ones first."""
    return sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
