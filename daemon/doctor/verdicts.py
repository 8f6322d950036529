"""One line per check (ok / warn / fail with the fix) and the exit code they add up to."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Level(enum.IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str  # what was checked, e.g. "inbox /srv/tigerwatch/inbox: create, rename, delete"
    detail: str = ""
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level.name.lower():<4}  {self.check}"
        text += f": {self.detail}" if self.detail else ""
        return text + (f" (fix: {self.fix})" if self.fix and self.level != Level.OK else "")


def ok(check: str, detail: str = "") -> Finding:
    return Finding(Level.OK, check, detail)


def warn(check: str, detail: str, fix: str) -> Finding:
    return Finding(Level.WARN, check, detail, fix)


def fail(check: str, detail: str, fix: str) -> Finding:
    return Finding(Level.FAIL, check, detail, fix)


def exit_code(findings: Iterable[Finding]) -> int:
    """0 all ok, 1 some warning, 2 some failure: the worst finding decides."""
    return int(max((finding.level for finding in findings), default=Level.OK))
