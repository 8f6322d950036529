"""The `strips:` settings as a decoder gets them: plain data, so decoders need no pydantic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StripRule(Protocol):
    """One camera's strips (config_strips.CameraStrips, or CameraCut here)."""

    @property
    def camera(self) -> str: ...
    @property
    def detect(self) -> bool: ...
    @property
    def top(self) -> float: ...
    @property
    def bottom(self) -> float: ...


class StripSettings(Protocol):
    """The `strips:` section (config_strips.Strips, or StripRules here)."""

    @property
    def detect(self) -> bool: ...
    @property
    def cameras(self) -> Sequence[StripRule]: ...
    def rule_for(self, camera: str | None) -> StripRule | None: ...


@dataclass(frozen=True)
class CameraCut:
    """A copy of one camera's configured strips."""

    camera: str
    detect: bool = False
    top: float = 0.0
    bottom: float = 0.0


@dataclass(frozen=True)
class StripRules:
    """A copy of the validated `strips:` section, with its rule_for.

    A pydantic model unpickles only where pydantic and the config module are imported: about
    10 MB in each decoder process, for two fields it reads."""

    detect: bool = True
    cameras: tuple[CameraCut, ...] = ()

    @classmethod
    def of(cls, settings: StripSettings) -> StripRules:
        if isinstance(settings, StripRules):
            return settings
        cuts = tuple(
            CameraCut(rule.camera, rule.detect, rule.top, rule.bottom) for rule in settings.cameras
        )
        return cls(detect=settings.detect, cameras=cuts)

    def rule_for(self, camera: str | None) -> CameraCut | None:
        """The override for this normalised camera name, if one is configured."""
        return next((rule for rule in self.cameras if rule.camera == camera), None)
