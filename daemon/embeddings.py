"""Stored image embeddings: written as float16, read back as float32 from either width."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

# Half the bytes of float32 and plenty for a linear head: float16 keeps ~3 significant digits
# of each component of a unit vector (README "Querying the database", growth figures).
STORED = np.dtype("<f2")
LEGACY = np.dtype("<f4")  # rows written before migration 0007


def as_stored(vector: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """The vector as it reads back from the database: rounded to float16, widened again.

    Scoring this instead of the model's own vector makes a stored row reproduce its score.
    """
    return np.asarray(vector).astype(STORED).astype(np.float32)


def to_stored(vector: npt.NDArray[np.floating]) -> bytes:
    """The bytes of `classifications.embedding` for a new row."""
    return np.asarray(vector).astype(STORED).tobytes()


def from_stored(blob: bytes, dim: int | None) -> npt.NDArray[np.float32]:
    """A stored embedding as float32, whether it was written as float16 or float32.

    The width follows from the byte length and `classifications.embedding_dim`; a row without
    a dimension predates float16 storage, so it is float32.
    """
    dtype: np.dtype[Any]
    if dim is None or len(blob) == dim * LEGACY.itemsize:
        dtype = LEGACY
    elif len(blob) == dim * STORED.itemsize:
        dtype = STORED
    else:
        raise ValueError(f"embedding of {len(blob)} bytes does not hold {dim} values")
    return np.frombuffer(blob, dtype=dtype).astype(np.float32)
