"""Exception tree of the dialplan layer, and the problems validation reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ivr.dialplan.model import NOWHERE, Where
from ivr.errors import IvrError


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a definition, with its source position."""

    where: Where
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        w = self.where
        return f"{w.file}:{w.line}:{w.col}: {self.severity}: {self.message}"


class DialplanError(IvrError):
    """The definition is not valid; ``problems`` lists every error found (sorted)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid dialplan"
        more = len(self.problems) - 1
        super().__init__(first + (f" (+{more} more)" if more > 0 else ""))


class PublishError(IvrError):
    """Publishing failed; ``rolled_back`` says whether the previous version was restored."""

    def __init__(self, message: str, rolled_back: bool = False) -> None:
        self.rolled_back = rolled_back
        super().__init__(message)


def problem(message: str, where: Where = NOWHERE) -> Problem:
    return Problem(where, message)
