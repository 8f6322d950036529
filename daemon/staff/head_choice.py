"""The head `model.head` names, checked against the model: for the daemon and for rescore."""

from __future__ import annotations

import logging

import numpy as np

from daemon.heads import LinearHead
from daemon.storage.staff import StaffStore

logger = logging.getLogger(__name__)


def configured_head(store: StaffStore, which: str, model_name: str) -> LinearHead | None:
    """Head `which` ("none", "latest" or an id); a missing or mismatched one is logged and
    None is returned: zero-shot decides."""
    if which == "none":
        return None
    stored = store.head(which)
    if stored is None:
        logger.error("model.head: %s: no such head saved; using zero-shot", which)
        return None
    if stored.model_name != model_name:
        logger.error(
            "model.head: head %d was trained on %s, not %s; using zero-shot",
            stored.id,
            stored.model_name,
            model_name,
        )
        return None
    logger.info("using head %d (%d verdicts)", stored.id, stored.verdict_count)
    weights = np.asarray(stored.weights, dtype=np.float64)
    return LinearHead(stored.id, weights, stored.bias, stored.infrared_weight)
