"""A trained linear head: a stored image embedding to a tiger score, in numpy alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LinearHead:
    """Logistic regression on the L2-normalised CLIP image embedding (`tigerwatch adapt`)."""

    id: int
    weights: npt.NDArray[np.float64]
    bias: float

    def score(self, embedding: npt.NDArray[np.floating]) -> float:
        """The head's tiger probability for one image embedding."""
        logit = float(np.dot(self.weights, embedding.astype(np.float64)) + self.bias)
        return float(1.0 / (1.0 + np.exp(-logit)))
