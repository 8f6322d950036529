"""Draw the audit sample: archived and uncertain frames linked into review/audit/<date>/."""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from daemon.cli_progress import Track, untracked
from daemon.delivery.naming import unique_destination
from daemon.storage.schema import AuditSample, ImageDecision, printable, utcnow
from daemon.storage.staff import StaffStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

AUDIT_FOLDER = "audit"
# One stratum: the frames no one looks at unless audited (archive and uncertain alike).
STRATUM = "archive+uncert"


@dataclass(frozen=True)
class AuditResult:
    folder: Path
    linked: int
    population: int
    problems: list[str]


def draw_audit(
    store: StaffStore,
    review: Path,
    size: int,
    *,
    seed: int | None,
    today: date | None = None,
    track: Track = untracked,
) -> AuditResult:
    """Link a uniform random sample of `size` frames (without replacement) for staff to judge."""
    population = store.audit_population(ImageDecision.NEGATIVE) + store.audit_population(
        ImageDecision.UNCERTAIN
    )
    batch = (today or date.today()).isoformat()
    folder = review / AUDIT_FOLDER / batch
    chosen = choose_sample(population, size, seed)
    if not chosen:
        return AuditResult(folder, 0, len(population), [])
    folder.mkdir(parents=True, exist_ok=True)
    weight = len(population) / len(chosen)  # each sampled frame stands for this many
    samples, problems = [], []
    for image_id, path in track(chosen, "audit", len(chosen), "frames"):
        try:
            link = link_or_copy(Path(path), folder)
        except OSError as err:
            problems.append(f"{printable(path)}: cannot link for the audit: {err.strerror or err}")
            continue
        samples.append(
            AuditSample(
                image_id=image_id,
                batch=batch,
                stratum=STRATUM,
                weight=weight,
                population=len(population),
                link_path=str(link),
                sampled_at=utcnow(),
            )
        )
    store.record_audit(samples)
    return AuditResult(folder, len(samples), len(population), problems)


def choose_sample(population: list[T], size: int, seed: int | None) -> list[T]:
    """`size` members drawn uniformly without replacement (all of them when fewer)."""
    return random.Random(seed).sample(population, min(size, len(population)))


def link_or_copy(source: Path, folder: Path) -> Path:
    """A hard link beside the other samples (no space used), or a copy across filesystems."""
    target = unique_destination(folder, source.name)
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        # Another filesystem, or links not allowed there (some SMB shares): copy instead.
        shutil.copy2(source, target, follow_symlinks=False)
    return target
