"""The classifications row a worker's result becomes (written by the store)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.storage.schema import Classification

if TYPE_CHECKING:  # the store imports this module: its types only for the checker
    from daemon.storage.store import ClassifiedImage, ModelInfo


def classification_row(
    result: ClassifiedImage, model: ModelInfo, labels: list[dict[str, object]]
) -> Classification:
    """The classifications row of one image's result."""
    positive, uncertain = result.thresholds or (model.positive_threshold, model.uncertain_threshold)
    return Classification(
        image_id=result.image_id,
        model_name=model.name,
        model_revision=model.revision,
        precision=model.precision,
        labels=labels,
        probabilities=result.probabilities,
        target_score=result.target_score,
        decision=result.decision.value,
        positive_threshold=positive,
        uncertain_threshold=uncertain,
        decode_ms=result.decode_ms,
        inference_ms=result.inference_ms,
        embedding=result.embedding,
        embedding_dim=result.embedding_dim,
        head_id=result.head_id,
    )
