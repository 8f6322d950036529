"""A trained linear head: a stored image embedding and the frame's light to a tiger score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LinearHead:
    """Logistic regression on the L2-normalised CLIP image embedding plus an infrared
    indicator (`tigerwatch adapt`): CLIP is less sure on grey night frames, so the head may
    learn a bias of their own."""

    id: int
    weights: npt.NDArray[np.float64]
    bias: float
    # Added to the logit of an infrared frame; None: a head trained before the light was an
    # input (heads.infrared_weight NULL), which scores the embedding alone.
    infrared_weight: float | None = None

    def score(self, embedding: npt.NDArray[np.floating], *, infrared: bool = False) -> float:
        """The head's tiger probability for one image embedding of a frame of this light."""
        logit = float(np.dot(self.weights, embedding.astype(np.float64)) + self.bias)
        if infrared and self.infrared_weight is not None:
            logit += self.infrared_weight
        return float(1.0 / (1.0 + np.exp(-logit)))
