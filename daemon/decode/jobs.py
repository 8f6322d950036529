"""One decode job: read a queued file without following links, check its hash, decode it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.beneath import UnsafePathError, folder_beneath
from daemon.decode.exif import normalised_camera
from daemon.decode.frame import prepare_frame
from daemon.decode.imaging import ImageError, decode_image
from daemon.decode.preprocess import PreprocessSpec
from daemon.decode.strip_rules import StripRules, StripSettings
from daemon.decode.views import View, to_view_levels
from daemon.hashing import sha256_bytes

JobFunction = Callable[["DecodeJob"], "DecodeOutcome"]

GONE_MISSING = "file disappeared from the inbox before it was classified"
GONE_CHANGED = "content changed after it was queued; the new content is a new image"
GONE_UNSAFE = "left where it is: a folder on the way to it became a symbolic link"


@dataclass(frozen=True)
class DecodeJob:
    """One queued image to decode and preprocess; picklable."""

    path: str
    # The hex digest recorded when the file was queued; None for a file still in its quiet
    # period (daemon/speculation.py): then nothing is checked, and the outcome says the digest.
    sha256: str | None
    formats: tuple[str, ...]
    max_pixels: int
    draft_size: int | None
    spec: PreprocessSpec
    max_file_bytes: int | None = None  # images.max_file_bytes: larger files are never read
    # The inboxes: the file is read from its inbox down, never through a symlinked folder.
    # Empty: read by path (tools and tests outside the daemon).
    inboxes: tuple[str, ...] = ()
    view: View = "center"  # model.view: which views of the frame the model sees
    # The `strips:` section: info strips found, or cut as configured per camera. Kept as
    # StripRules, which a decoder unpickles without pydantic.
    strips: StripSettings = field(default_factory=StripRules)
    # (size, mtime_ns) the file had when last looked at: a file changed since is not read.
    unchanged_since: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strips", StripRules.of(self.strips))


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays has no single truth value
class DecodeOutcome:
    """What became of a DecodeJob: pixels, or `error` (counts as an attempt), or `gone`."""

    # (V, S, S, 3) uint8 RGB levels when decoded, one per view: the model's process normalises
    # them (a quarter of float32's bytes through the pipe)
    pixels: npt.NDArray[np.uint8] | None = None
    infrared: bool = False  # a night (infrared) frame: its own prompts and thresholds
    strip_top: int = 0  # info strip rows cut before the views, in pixels of the original frame
    strip_bottom: int = 0
    capture_time: datetime | None = None
    camera_make: str | None = None  # normalised (see decode.exif.normalised_camera)
    camera_model: str | None = None
    error: str | None = None  # "<path>: <reason>"
    gone: str | None = None  # the queued content is no longer at its path
    decode_ms: float = 0.0
    sha256: str | None = None  # of the bytes decoded (None when none were read)


def decode_job(job: DecodeJob) -> DecodeOutcome:
    """Read, verify, decode and preprocess one image. Never raises for bad input."""
    started = time.perf_counter()

    def outcome(**fields: Any) -> DecodeOutcome:
        return DecodeOutcome(decode_ms=(time.perf_counter() - started) * 1000, **fields)

    try:
        data = _read_no_follow(job)
    except _OtherContentError:
        # Over the limit, or changed since the look the job was made from: other content
        # than was queued (or looked at), which intake judges afresh.
        return outcome(gone=GONE_CHANGED)
    except UnsafePathError:
        return outcome(gone=GONE_UNSAFE)
    except FileNotFoundError:
        return outcome(gone=GONE_MISSING)
    except OSError as err:
        return outcome(error=f"{job.path}: cannot be read: {err.strerror or err}")
    digest = sha256_bytes(data)
    if job.sha256 is not None and digest != job.sha256:
        return outcome(gone=GONE_CHANGED)
    return outcome(sha256=digest, **decode_bytes(data, job))


def decode_bytes(data: bytes, job: DecodeJob) -> dict[str, Any]:
    """The DecodeOutcome fields of an image's bytes; `tigerwatch classify` shares this step."""
    try:
        decoded = decode_image(
            data,
            name=job.path,
            formats=job.formats,
            max_pixels=job.max_pixels,
            draft_size=job.draft_size,
        )
        camera = normalised_camera(decoded.metadata)
        frame = prepare_frame(decoded, job.strips, camera.name)
        pixels = to_view_levels(frame.image, job.spec, job.view)
    except ImageError as err:
        return {"error": str(err)}
    except Exception as err:  # a decoder bug must fail this file only
        return {"error": f"{job.path}: unexpected decoder failure: {err!r}"}
    return {
        "pixels": pixels,
        "infrared": frame.infrared,
        "strip_top": frame.strip_top,
        "strip_bottom": frame.strip_bottom,
        "capture_time": decoded.metadata.capture_time,
        "camera_make": camera.make,
        "camera_model": camera.model,
    }


class _OtherContentError(Exception):
    """The opened file is over the size limit, or not as last seen: not one byte was read."""


def _read_no_follow(job: DecodeJob) -> bytes:
    """Read a file's bytes without ever following a symlink put in its place or on its way.

    The size is checked on the opened file (fstat) before reading, so a file that grew past
    `max_bytes` meanwhile is never loaded into the decoder's memory.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if not job.inboxes:
        fd = os.open(job.path, flags)
    else:
        with folder_beneath(Path(job.path), [Path(inbox) for inbox in job.inboxes]) as folder:
            fd = os.open(Path(job.path).name, flags, dir_fd=folder)
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        if job.max_file_bytes is not None and opened.st_size > job.max_file_bytes:
            raise _OtherContentError(job.path)
        seen = job.unchanged_since
        if seen is not None and (opened.st_size, opened.st_mtime_ns) != seen:
            raise _OtherContentError(job.path)  # still being written: other content, not read
        return handle.read()
