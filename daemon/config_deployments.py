"""The configuration's deployments: a frame's camera from its inbox path, its clock, its events."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from daemon.config_errors import problem as _problem
from daemon.config_fields import Text


class _Section(BaseModel):
    # As daemon.config's sections: immutable, no unknown keys, no infinities.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _check_pattern(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as err:
        raise _problem(f"is not a regular expression: {err}") from None
    return value


class DeploymentsFrom(_Section):
    """How a frame's deployment (one camera at one place) is read from its path in the inbox.

    `levels`: the first N folders below the inbox, joined by "/" (default 1: `inbox/<id>/...`);
    `pattern`: a regular expression searched in the path below the inbox (folders and name,
    "/"-separated), whose group `deployment` (else its first group, else the whole match) is
    the id. A frame with fewer folders, or whose path does not match, has no deployment.
    """

    levels: int = Field(default=1, ge=0, le=16)
    pattern: Annotated[str | None, AfterValidator(_check_pattern)] = None

    @model_validator(mode="after")
    def _one_rule(self) -> "DeploymentsFrom":
        if self.pattern is not None and "levels" in self.model_fields_set:
            raise _problem("give either levels or pattern, not both")
        return self

    def deployment_of(self, path: Path, inboxes: tuple[Path, ...]) -> str | None:
        """The deployment id of an inbox file, or None (directly in the inbox, no match)."""
        relative = _below_inbox(path, inboxes)
        if relative is None:
            return None
        if self.pattern is not None:
            found = re.search(self.pattern, str(relative))
            if found is None:
                return None
            groups = found.groupdict()
            value = groups.get("deployment") or (found.group(1) if found.re.groups else None)
            return (value or found.group(0)) or None
        folders = relative.parts[:-1]
        if self.levels == 0 or len(folders) < self.levels:
            return None
        return "/".join(folders[: self.levels])


def _below_inbox(path: Path, inboxes: tuple[Path, ...]) -> PurePosixPath | None:
    for inbox in sorted(inboxes, key=lambda folder: len(folder.parts), reverse=True):
        if inbox in path.parents:
            return PurePosixPath(path.relative_to(inbox).as_posix())
    return None


_UTC_OFFSET = re.compile(
    r"^(?:UTC|GMT)?\s*(?:(?P<sign>[+-])(?P<hours>\d{1,2})(?::?(?P<minutes>\d{2}))?)?$"
)


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    found = _UTC_OFFSET.match(value.strip().upper())
    if found is None or not value.strip():
        raise _problem(f"must be a UTC offset such as '+10:00', '-03:30' or 'UTC', not {value!r}")
    if utc_offset(value) > timedelta(hours=14) or utc_offset(value) < timedelta(hours=-12):
        raise _problem("must be between -12:00 and +14:00")
    return value


def utc_offset(value: str) -> timedelta:
    """'+10:00', 'UTC+10', '-0330', 'UTC' as a timedelta east of UTC."""
    found = _UTC_OFFSET.match(value.strip().upper())
    if found is None or found.group("sign") is None:
        return timedelta(0)
    hours, minutes = int(found.group("hours")), int(found.group("minutes") or 0)
    sign = -1 if found.group("sign") == "-" else 1
    return sign * timedelta(hours=hours, minutes=minutes)


class Deployment(_Section):
    """What is known of one deployment: its name, place and the error of its camera's clock."""

    name: Text | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    # Added to the camera's EXIF time: a camera set 12 h behind has 43200.
    clock_offset_seconds: float = Field(default=0.0, ge=-10 * 365 * 86400, le=10 * 365 * 86400)
    # The UTC offset the (corrected) camera clock keeps, e.g. "+10:00"; unset: unknown.
    timezone: Annotated[str | None, AfterValidator(_check_timezone)] = None

    def corrected(self, capture_time: datetime) -> datetime:
        """The camera's time with its clock error removed, still in the camera's zone."""
        return capture_time + timedelta(seconds=self.clock_offset_seconds)

    def in_utc(self, corrected: datetime) -> datetime | None:
        """The corrected time in UTC, when the deployment's timezone is known."""
        if self.timezone is None:
            return None
        return (corrected - utc_offset(self.timezone)).replace(tzinfo=UTC)


class Events(_Section):
    """How frames of one deployment are grouped into events (bursts)."""

    # Frames whose corrected capture times are at most this far apart share an event
    # (MegaDetector's sequence gap).
    gap_seconds: float = Field(default=60.0, gt=0, le=86400)
