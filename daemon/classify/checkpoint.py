"""What the loader child hands the daemon from a CLIP checkpoint: picklable, no torch needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.config_labels import Label
from daemon.decode.preprocess import PreprocessSpec


@dataclass(frozen=True)
class TowerShape:
    """The vision config's fields the tower is built from (CLIPVisionConfig's names)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int
    layer_norm_eps: float
    hidden_act: str
    projection_dim: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TowerShape:
        """From a vision config as a dict; a missing field raises KeyError naming it."""
        return cls(
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=int(config["num_attention_heads"]),
            image_size=int(config["image_size"]),
            patch_size=int(config["patch_size"]),
            num_channels=int(config["num_channels"]),
            layer_norm_eps=float(config["layer_norm_eps"]),
            hidden_act=str(config["hidden_act"]),
            projection_dim=int(config["projection_dim"]),
        )


@dataclass(frozen=True, eq=False)
class CheckpointParts:
    """The prompts' embeddings and the recipe of the image tower; its weights stay in the file."""

    text_embeddings: npt.NDArray[np.float32]  # one L2-normalised row per prompt, in order
    logit_scale: float  # CLIP's learned temperature, exp() taken
    preprocess_spec: PreprocessSpec  # the image processor's steps, for the decoders
    input_size: int  # the side of the square the tower takes
    tower: TowerShape  # the vision config
    weights_path: str  # the checkpoint file holding the tower's weights
    revision: str  # the hub commit, or a hash of a folder's weights


def all_prompts(labels: Sequence[Label]) -> tuple[str, ...]:
    """Every distinct prompt text, day and infrared, in first-seen order: embedded once each."""
    texts = [text for label in labels for text in (*label.prompts, *label.infrared_prompts)]
    return tuple(dict.fromkeys(texts))
