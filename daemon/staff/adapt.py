"""Train the `tigerwatch adapt` head on stored embeddings and light; compare it with zero-shot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from daemon.cli_progress import Track, untracked
from daemon.embeddings import from_stored
from daemon.staff.evaluate import TooFewVerdicts
from daemon.staff.metrics import confusion, precision_at_recall
from daemon.storage.schema import Head
from daemon.storage.staff import JudgedEmbedding

MAX_FOLDS = 5


@dataclass(frozen=True)
class Comparison:
    """Cross-validated figures of the head against zero-shot on the same verdicts."""

    head_recall: float  # out-of-fold, at the positive threshold
    head_precision: float
    head_precision_at_target: float
    zero_shot_recall: float
    zero_shot_precision: float
    zero_shot_precision_at_target: float
    folds: int

    @property
    def head_is_better(self) -> bool:
        return self.head_precision_at_target > self.zero_shot_precision_at_target

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _matrix(
    judged: Sequence[JudgedEmbedding],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int_]]:
    """One row per frame: its embedding, then 1.0 for an infrared frame (0.0 for colour).

    The light column lets the head learn a bias of its own for night frames, on which CLIP
    is less sure (the notebook's plan); its weight is stored as `heads.infrared_weight`.
    """
    embeddings = np.stack([from_stored(j.embedding, j.embedding_dim) for j in judged])
    lights = np.array([[float(j.infrared)] for j in judged])
    features = np.hstack([embeddings.astype(np.float64), lights])
    labels = np.array([int(j.is_tiger) for j in judged])
    return features, labels


def _model() -> LogisticRegression:
    # Balanced: tigers are rare among verdicts, and a miss costs more than a false alarm.
    return LogisticRegression(class_weight="balanced", max_iter=2000)


def cross_validate(
    judged: Sequence[JudgedEmbedding],
    positive: float,
    target_recall: float,
    min_each: int,
    *,
    track: Track = untracked,
) -> Comparison:
    """Out-of-fold head probabilities (stratified k-fold) against the zero-shot scores."""
    tigers = sum(j.is_tiger for j in judged)
    smaller = min(tigers, len(judged) - tigers)
    if smaller < min_each:
        raise TooFewVerdicts(
            f"{tigers} judged tiger and {len(judged) - tigers} judged not tiger frames with "
            f"stored embeddings; adapt needs at least {min_each} of each (--min-verdicts)"
        )
    features, labels = _matrix(judged)
    folds = min(MAX_FOLDS, smaller)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    held_out = np.zeros(len(labels))
    for train, test in track(splitter.split(features, labels), "adapt", folds, "folds"):
        held_out[test] = (
            _model().fit(features[train], labels[train]).predict_proba(features[test])[:, 1]
        )
    truth = [bool(label) for label in labels]
    zero_shot = [j.zero_shot_score for j in judged]
    head_counts = confusion(list(held_out), truth, positive)
    zero_counts = confusion(zero_shot, truth, positive)
    return Comparison(
        head_recall=head_counts.recall.value or 0.0,
        head_precision=head_counts.precision.value or 0.0,
        head_precision_at_target=precision_at_recall(list(held_out), truth, target_recall)[1],
        zero_shot_recall=zero_counts.recall.value or 0.0,
        zero_shot_precision=zero_counts.precision.value or 0.0,
        zero_shot_precision_at_target=precision_at_recall(zero_shot, truth, target_recall)[1],
        folds=folds,
    )


def train_head(judged: Sequence[JudgedEmbedding], comparison: Comparison) -> Head:
    """The head fitted on every verdict, as a row for the heads table."""
    features, labels = _matrix(judged)
    model = _model().fit(features, labels)
    return Head(
        model_name=judged[0].model_name,
        model_revision=judged[0].model_revision,
        verdict_count=len(judged),
        cv=comparison.as_dict(),
        weights=[float(w) for w in model.coef_[0][:-1]],
        bias=float(model.intercept_[0]),
        infrared_weight=float(model.coef_[0][-1]),  # the light column of _matrix
    )


def format_comparison(comparison: Comparison, target_recall: float) -> str:
    c = comparison
    return "\n".join(
        [
            f"cross-validated on {c.folds} folds (same verdicts for both):",
            f"  head:      recall {c.head_recall:.3f}, precision {c.head_precision:.3f}; "
            f"precision at recall {target_recall:g}: {c.head_precision_at_target:.3f}",
            f"  zero-shot: recall {c.zero_shot_recall:.3f}, precision {c.zero_shot_precision:.3f}; "
            f"precision at recall {target_recall:g}: {c.zero_shot_precision_at_target:.3f}",
        ]
    )
