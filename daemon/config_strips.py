"""The configuration's `strips:` section: find burned-in info strips, or cut them per camera."""

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from daemon.config_errors import Loc
from daemon.config_errors import problem as _problem
from daemon.config_errors import problems as _problems

# Not daemon.config_fields: the decoders import this module, and that one reaches SQLAlchemy.


def _camera_key(value: str) -> str:
    # Written as the daemon records it (images.camera_make || ' ' || camera_model): case and
    # runs of spaces do not matter.
    key = " ".join(value.casefold().split())
    if not key:
        raise _problem("must not be empty")
    return key


MAX_CUT = 0.5  # the most of a frame's height a camera's strips may take, top and bottom together


class _Section(BaseModel):
    # As daemon.config's sections: immutable, no unknown keys, no infinities.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CameraStrips(_Section):
    """One camera's strips: fixed shares of the height to cut, or detection off (cut nothing)."""

    camera: Annotated[str, AfterValidator(_camera_key)]
    detect: bool = False  # false: `top` and `bottom` are cut as given (both 0: nothing cut)
    top: float = Field(default=0.0, ge=0, lt=0.5)
    bottom: float = Field(default=0.0, ge=0, lt=0.5)

    @model_validator(mode="after")
    def _one_way(self) -> "CameraStrips":
        if self.detect and (self.top or self.bottom):
            raise _problems([(("detect",), "give either detect: true or top/bottom, not both")])
        if self.top + self.bottom > MAX_CUT:
            # What is left must still be a picture: a sliver would become dozens of crops.
            message = f"top and bottom together must be at most {MAX_CUT:g} of the height"
            raise _problems([(("bottom",), message)])
        return self


class Strips(_Section):
    """Burned-in info strips (date, temperature, logo bands) cut before the model sees a frame."""

    detect: bool = True  # find them in the pixels (cameras listed below aside)
    cameras: tuple[CameraStrips, ...] = ()

    @field_validator("cameras")
    @classmethod
    def _one_rule_per_camera(cls, cameras: tuple[CameraStrips, ...]) -> tuple[CameraStrips, ...]:
        seen: set[str] = set()
        found: list[tuple[Loc, str]] = []
        for index, rule in enumerate(cameras):
            if rule.camera in seen:
                found.append(((index, "camera"), f"{rule.camera!r} is listed twice"))
            seen.add(rule.camera)
        if found:
            raise _problems(found)
        return cameras

    def rule_for(self, camera: str | None) -> CameraStrips | None:
        """The override for this normalised camera name, if one is configured."""
        return next((rule for rule in self.cameras if rule.camera == camera), None)
