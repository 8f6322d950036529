"""Classifies a list of image files once, outside the daemon: the job of `tigerwatch classify`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.classify.classifier import Classification, ClipClassifier
from daemon.config import Config
from daemon.decode.imaging import DecodedImage, ImageError, load_image
from daemon.outcomes import Decision, decide


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    classification: Classification | None = None
    decision: Decision | None = None
    error: str | None = None


def classify_files(
    classifier: ClipClassifier, paths: Sequence[Path], config: Config
) -> Iterator[FileOutcome]:
    """Yield one outcome per path, in order; a bad file fails only its own outcome."""
    size = config.model.batch_size
    for chunk in (paths[start : start + size] for start in range(0, len(paths), size)):
        decoded: list[tuple[Path, DecodedImage]] = []
        failed: dict[Path, str] = {}
        for path in chunk:
            try:
                decoded.append((path, _load(path, config, classifier.input_size)))
            except ImageError as err:
                failed[path] = str(err)
        results = classifier.classify([image.image for _, image in decoded])
        by_path = dict(zip([path for path, _ in decoded], results, strict=True))
        for path in chunk:
            if path in failed:
                yield FileOutcome(path=path, error=failed[path])
            else:
                yield _outcome(path, by_path[path], config)


def _load(path: Path, config: Config, draft_size: int) -> DecodedImage:
    # The daemon's decode: the same JPEG draft scale, so a borderline frame gets the same answer.
    return load_image(
        path,
        formats=config.images.formats,
        max_pixels=config.images.max_pixels,
        draft_size=draft_size,
    )


def _outcome(path: Path, classification: Classification, config: Config) -> FileOutcome:
    decision = decide(
        classification.target_score,
        positive_threshold=config.decision.positive_threshold,
        uncertain_threshold=config.decision.uncertain_threshold,
    )
    return FileOutcome(path=path, classification=classification, decision=decision)
