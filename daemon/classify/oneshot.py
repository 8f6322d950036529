"""Classifies a list of image files once, outside the daemon: the job of `tigerwatch classify`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.classify.classifier import Classification, ClipClassifier
from daemon.config import Config
from daemon.decode.jobs import DecodeJob, decode_bytes
from daemon.outcomes import Decision, decide


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    classification: Classification | None = None
    decision: Decision | None = None
    error: str | None = None
    strips: tuple[int, int] = (0, 0)  # info strip rows cut (top, bottom), original pixels


def classify_files(
    classifier: ClipClassifier, paths: Sequence[Path], config: Config
) -> Iterator[FileOutcome]:
    """Yield one outcome per path, in order; a bad file fails only its own outcome."""
    size = config.model.batch_size
    for chunk in (paths[start : start + size] for start in range(0, len(paths), size)):
        decoded: dict[Path, dict[str, object]] = {}
        failed: dict[Path, str] = {}
        for path in chunk:
            fields = _decode(path, config, classifier)
            if "error" in fields:
                failed[path] = str(fields["error"])
            else:
                decoded[path] = fields
        results = classifier.classify_pixels(
            [fields["pixels"] for fields in decoded.values()],  # type: ignore[misc]
            [bool(fields.get("infrared", False)) for fields in decoded.values()],
        )
        by_path = dict(zip(decoded, results, strict=True))
        for path in chunk:
            if path in failed:
                yield FileOutcome(path=path, error=failed[path])
            else:
                yield _outcome(path, by_path[path], config, decoded[path])


def _decode(path: Path, config: Config, classifier: ClipClassifier) -> dict[str, object]:
    """The daemon's decode step on the file's bytes: same draft scale, views and light."""
    images = config.images
    try:
        size = path.stat().st_size
        if size > images.max_file_bytes:
            return {"error": f"{path}: {size} bytes, more than images.max_file_bytes"}
        data = path.read_bytes()
    except OSError as err:
        return {"error": f"{path}: cannot be read: {err.strerror or err}"}
    job = DecodeJob(
        path=str(path),
        sha256="",  # not checked: decode_bytes takes the bytes as read
        formats=tuple(images.formats),
        max_pixels=images.max_pixels,
        draft_size=classifier.input_size,
        spec=classifier.preprocess_spec,
        view=config.model.view,
        strips=config.strips,
    )
    return decode_bytes(data, job)


def _outcome(
    path: Path, classification: Classification, config: Config, fields: dict[str, object]
) -> FileOutcome:
    positive, uncertain = config.decision.thresholds(infrared=classification.infrared)
    decision = decide(
        classification.target_score, positive_threshold=positive, uncertain_threshold=uncertain
    )
    strips = (_rows(fields.get("strip_top")), _rows(fields.get("strip_bottom")))
    return FileOutcome(path=path, classification=classification, decision=decision, strips=strips)


def _rows(value: object) -> int:
    return value if isinstance(value, int) else 0
