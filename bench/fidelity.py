"""Fidelity against fp32: image embeddings and label probabilities compared image by image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.frames import FloatArray
from bench.inputs import LABELS
from daemon.classify.classifier import ClipClassifier
from daemon.decode.imaging import decode_image


@dataclass(frozen=True)
class Fidelity:
    min_cosine: float
    max_probability_diff: float


def preprocessed(
    classifier: ClipClassifier, paths: Sequence[Path], draft: int | None
) -> torch.Tensor:
    """Decode like the daemon (draft) or in full (draft None), then CLIP-preprocess each image."""
    tensors = []
    for path in paths:
        decoded = decode_image(path.read_bytes(), name=str(path), draft_size=draft)
        tensors.append(classifier.preprocess(decoded.image)[0])  # the one centre view
    return torch.stack(tensors)


def embed(
    classifier: ClipClassifier, pixels: torch.Tensor, batch_size: int
) -> tuple[FloatArray, FloatArray]:
    """(embeddings, probabilities) row per image, computed in batches of batch_size."""
    results = []
    for start in range(0, len(pixels), batch_size):
        results.extend(classifier.classify_tensors(pixels[start : start + batch_size]))
    embeddings = np.stack([result.embedding for result in results]).astype(np.float32)
    probabilities = np.array(
        [[result.probabilities[label] for label in LABELS] for result in results], np.float32
    )
    return embeddings, probabilities


def compare(
    reference: tuple[FloatArray, FloatArray], other: tuple[FloatArray, FloatArray]
) -> Fidelity:
    # The embeddings are L2-normalised, so the row-wise dot product is the cosine.
    cosines = np.sum(reference[0].astype(np.float64) * other[0], axis=1)
    differences = np.abs(reference[1].astype(np.float64) - other[1])
    return Fidelity(float(cosines.min()), float(differences.max()))
